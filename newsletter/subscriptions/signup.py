"""Subscribing from the web form: check the fields, then decide which mail (if any) to send."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlmodel import Session

from newsletter import addresses
from newsletter.actors import Actor
from newsletter.mail.subscription import MailKind, MailRequest
from newsletter.models import SubscriberStatus
from newsletter.subscriptions import store, suppression
from newsletter.subscriptions.lists import LANGUAGES, ListRow, check_text

# Problems are told in both languages of the pages: Chinese first, English after.
PROBLEMS = {
    "email": "请填写有效的电子邮箱地址 / Enter a valid email address",
    "name": "姓名过长或含有不可见字符 / The name is too long or holds invisible characters",
    "embassy": "请选择所在使领馆 / Choose your embassy or consulate",
    "sectors": "所选领域无效 / A chosen sector is not offered",
    "language": "请选择语言 / Choose a language",
}


@dataclass(frozen=True)
class SignupForm:
    email: str
    name: str
    embassy: str
    sectors: tuple[str, ...]
    language: str


def check_form(
    *,
    email: str,
    name: str,
    embassy: str,
    sectors: Sequence[str],
    language: str,
    embassies: Collection[str],
    offered: Collection[str],
) -> tuple[SignupForm | None, dict[str, str]]:
    """The cleaned form, or None and a problem per field."""
    problems: dict[str, str] = {}
    try:
        address = addresses.normalise(email)
    except addresses.AddressError:
        address = ""
        problems["email"] = PROBLEMS["email"]
    if check_text(name.strip(), "name"):
        problems["name"] = PROBLEMS["name"]
    if embassy not in embassies:
        problems["embassy"] = PROBLEMS["embassy"]
    if any(code not in offered for code in sectors):
        problems["sectors"] = PROBLEMS["sectors"]
    if language not in LANGUAGES:
        problems["language"] = PROBLEMS["language"]
    if problems:
        return None, problems
    codes = tuple(dict.fromkeys(sectors))
    return SignupForm(address, name.strip(), embassy, codes, language), {}


def domain_allowed(address: str, allowed: Collection[str]) -> bool:
    """Whether `[web] allowed_domains` lets this (normalised) address in; a subdomain of an
    allowed domain counts as it (de.mfa.gov.cn under mfa.gov.cn). Nothing allowed: all are."""
    if not allowed:
        return True
    domain = address.rpartition("@")[2].lower().rstrip(".")
    return any(domain == d or domain.endswith(f".{d}") for d in allowed)


def request_signup(
    session: Session,
    secret: bytes,
    form: SignupForm,
    *,
    actor: Actor,
    allowed_domains: Collection[str] = (),
) -> MailRequest | None:
    """Record a sign-up and say what to mail (no commit). None: say nothing, send nothing.

    The caller answers the same whatever this returns, so the page reveals nothing: not which
    domains are allowed, nor whether the address is known. An existing subscriber's stored
    details are never changed here: whoever filled in the form may not own the address, and the
    owner can change them through the link the mail carries.
    """
    if not domain_allowed(form.email, allowed_domains):
        return None  # nothing stored either: an outsider's address is not ours to keep
    if suppression.is_suppressed(session, secret, form.email):
        return None
    existing = store.by_address(session, form.email)
    if existing is None:
        row = ListRow(
            form.email, form.name, "", form.embassy, form.sectors, form.language, "web", 0
        )
        created = store.create(
            session, row, status=SubscriberStatus.PENDING, actor=actor.label, via=actor.via,
            consent="web:subscribe",
        )  # fmt: skip
        return MailRequest.about(MailKind.CONFIRM, created)
    if existing.status == SubscriberStatus.ACTIVE:
        return MailRequest.about(MailKind.ALREADY, existing)
    if existing.status == SubscriberStatus.AWAITING:
        return None  # confirmed already; the mission's answer is what they wait for
    store.audit(
        session, existing, "confirmation-sent", old=str(existing.status), actor=actor.label,
        via=actor.via, detail="subscribe form used again",
    )  # fmt: skip
    return MailRequest.about(MailKind.CONFIRM, existing)
