"""The sending setup judged before a send: what providers will hold against our mail.

Pure: the caller reads the DKIM key file and probes the relay, and passes what it found. The
findings name the setting and the line that fixes it; the DNS records are what to publish.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from newsletter.config import Settings

MIN_KEY_BITS = 2048
# Second-level labels under which registrations sit one level deeper (example.com.cn, not
# com.cn): enough for the hosts an embassy list meets, without the whole public suffix list.
_SECOND_LEVEL = frozenset({"ac", "co", "com", "edu", "gov", "net", "org", "mil", "ne", "or", "go"})


class Level(StrEnum):
    ERROR = "error"  # a send on the smtp transport is refused until it is fixed
    WARNING = "warning"  # mail goes out, but providers will count it against us
    OK = "ok"


@dataclass(frozen=True)
class Finding:
    level: Level
    topic: str  # the setting or subject: base_url, dkim, dkim.key_file, smtp, dns
    message: str


@dataclass(frozen=True)
class KeyFacts:
    """What the DKIM key file held: its size and the public half, for the DNS record."""

    bits: int
    public_b64: str


@dataclass(frozen=True)
class DnsRecord:
    name: str
    type: str
    value: str
    why: str


def key_facts(pem: bytes, where: str) -> tuple[KeyFacts | None, str]:
    """The facts of a PEM private key, or why it is not a key DKIM here can sign with."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        return None, f"dkim.key_file {where} is not an unencrypted PEM private key ({exc})"
    if not isinstance(key, rsa.RSAPrivateKey):
        return None, f"dkim.key_file {where} is not an RSA key; DKIM here signs with rsa-sha256"
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyFacts(key.key_size, base64.b64encode(public).decode()), ""


def organisational_domain(domain: str) -> str:
    """The registered domain DMARC aligns on (relaxed alignment): mail.example.org -> example.org."""
    labels = domain.lower().rstrip(".").split(".")
    keep = 3 if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2 else 2
    return ".".join(labels[-keep:])


def is_loopback(host: str) -> bool:
    if host in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _sender_domain(settings: Settings) -> str:
    return settings.sender.address.rpartition("@")[2].lower()


def judge_base_url(settings: Settings) -> list[Finding]:
    parts = urlsplit(settings.base_url)
    if parts.scheme == "https" and parts.hostname:
        return [Finding(Level.OK, "base_url", f"links use {settings.base_url}")]
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return [
            Finding(
                Level.WARNING, "base_url",
                f"base_url {settings.base_url} is this machine: fine for a trial, but no reader "
                'can open its links; set base_url = "https://<public host>" before a real send',
            )
        ]  # fmt: skip
    return [
        Finding(
            Level.ERROR, "base_url",
            f"base_url {settings.base_url!r} is not https: List-Unsubscribe must be an https URI "
            '(RFC 8058) and links carry personal tokens; set base_url = "https://<public host>"',
        )
    ]  # fmt: skip


def judge_dkim(settings: Settings, key: KeyFacts | None, key_problem: str) -> list[Finding]:
    dkim = settings.dkim
    given = {"domain": dkim.domain, "selector": dkim.selector, "key_file": dkim.key_file}
    missing = [name for name, value in given.items() if not value]
    if len(missing) == len(given):
        return [
            Finding(
                Level.WARNING, "dkim",
                "mail is not DKIM-signed: Gmail, Yahoo and Outlook expect bulk mail signed; set "
                "[dkim] domain, selector and key_file (and publish the record `check` prints)",
            )
        ]  # fmt: skip
    if missing:
        names = ", ".join(f"dkim.{m}" for m in missing)
        return [
            Finding(
                Level.ERROR, "dkim",
                f"[dkim] is partly set ({names} empty): mail would go out unsigned; set all "
                "three of domain, selector and key_file, or none",
            )
        ]  # fmt: skip
    found: list[Finding] = []
    if key_problem:
        found.append(Finding(Level.ERROR, "dkim.key_file", key_problem))
    elif key is not None and key.bits < MIN_KEY_BITS:
        found.append(
            Finding(
                Level.ERROR, "dkim.key_file",
                f"the DKIM key has {key.bits} bits; providers want at least {MIN_KEY_BITS}: "
                f"make a new one (openssl genrsa -out dkim.pem {MIN_KEY_BITS}) and publish it",
            )
        )  # fmt: skip
    sender = _sender_domain(settings)
    if organisational_domain(dkim.domain) != organisational_domain(sender):
        found.append(
            Finding(
                Level.ERROR, "dkim.domain",
                f"DKIM signs as {dkim.domain} but mail is From {sender}: DMARC needs the two "
                f"in one organisational domain ({organisational_domain(sender)}); set "
                f'dkim.domain = "{sender}" or sender.address on {dkim.domain}',
            )
        )  # fmt: skip
    if not found:
        found.append(
            Finding(Level.OK, "dkim", f"signed as {dkim.domain} (selector {dkim.selector})")
        )
    return found


def judge_smtp(settings: Settings, probe_problem: str | None) -> list[Finding]:
    """`probe_problem`: None when not probed, "" when the relay answered as it should."""
    smtp = settings.smtp
    found: list[Finding] = []
    if smtp.password and smtp.security == "none" and not is_loopback(smtp.host):
        found.append(
            Finding(
                Level.ERROR, "smtp.security",
                f"a password would cross the network to {smtp.host} in clear; set "
                'smtp.security = "starttls" (port 587) or "ssl" (port 465)',
            )
        )  # fmt: skip
    if probe_problem:
        found.append(Finding(Level.ERROR, "smtp", probe_problem))
    elif probe_problem == "":
        found.append(Finding(Level.OK, "smtp", f"{smtp.host}:{smtp.port} answered"))
    return found


def judge_bounce_domain(settings: Settings) -> list[Finding]:
    """The return path (VERP) of [inbox] bounce_domain: said only when one is set."""
    domain = settings.inbox.bounce_domain
    if not domain:
        return []
    found = [
        Finding(
            Level.OK, "inbox.bounce_domain",
            f"each digest's return path is bounce+<signed token>@{domain}: a bounce names its "
            "ledger row",
        )
    ]  # fmt: skip
    sender_org = organisational_domain(_sender_domain(settings))
    if organisational_domain(domain) != sender_org:
        found.append(
            Finding(
                Level.WARNING, "inbox.bounce_domain",
                f"bounce domain {domain} is not under {sender_org} (the From domain): SPF then "
                f"does not align for DMARC; use a name such as bounces.{sender_org}",
            )
        )  # fmt: skip
    if not settings.inbox.host:
        found.append(
            Finding(
                Level.WARNING, "inbox.host",
                f"bounces come back to {domain} but nothing reads them: set [inbox] host, "
                "username and password to the mailbox its MX delivers to (`inbox fetch`)",
            )
        )  # fmt: skip
    return found


def dns_records(settings: Settings, key: KeyFacts | None) -> list[DnsRecord]:
    """What to publish for the sender's domain: starting points, to be tightened later."""
    sender = _sender_domain(settings)
    org = organisational_domain(sender)
    records = []
    if settings.dkim.enabled and key is not None:
        records.append(
            DnsRecord(
                f"{settings.dkim.selector}._domainkey.{settings.dkim.domain}", "TXT",
                f"v=DKIM1; k=rsa; p={key.public_b64}", "the public half of [dkim] key_file",
            )
        )  # fmt: skip
    records.append(
        DnsRecord(
            sender, "TXT", f"v=spf1 a:{settings.domain} mx ~all",
            f"SPF: the hosts that send as {sender}; add your relay's (include:...) if it is "
            "another provider's",
        )
    )  # fmt: skip
    records.append(
        DnsRecord(
            f"_dmarc.{org}", "TXT", f"v=DMARC1; p=none; rua=mailto:dmarc@{org}",
            "DMARC, reporting only: move to p=quarantine once the reports show only your mail",
        )
    )  # fmt: skip
    if settings.inbox.bounce_domain:
        bounce = settings.inbox.bounce_domain
        records.append(
            DnsRecord(
                bounce, "MX", "the host whose mailbox [inbox] reads",
                "VERP: bounces to bounce+...@ this domain must arrive where `inbox fetch` looks",
            )
        )  # fmt: skip
        records.append(
            DnsRecord(
                bounce, "TXT", f"v=spf1 a:{settings.domain} mx ~all",
                "SPF for the return path: receivers check the envelope sender's domain",
            )
        )  # fmt: skip
    records.append(
        DnsRecord(
            settings.domain, "A/PTR", "the sending host's address, and its PTR back to this name",
            f"EHLO names {settings.domain}: its forward and reverse DNS should agree",
        )
    )  # fmt: skip
    return records


def blockers(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level is Level.ERROR]
