"""Email addresses: one normal form for storage, one form for the wire (pure, no I/O).

The stored form, which every entry point (staff commands, list import, the subscribe form, lookups)
gets from `normalise`:

- the syntax checked by email-validator (no DNS lookup: a mission's server may be unreachable
  from here and still be right), internationalised domains accepted (IDNA 2008 / UTS 46);
- Unicode kept as the person wrote it, NFC-normalised, with the domain in its Unicode form
  (U-labels): `kjc@xn--2rqs81p.xn--fiqs8s` and `kjc@使馆.中国` are one person, stored as the latter;
- the whole address lower-cased, local part included. Strictly a local part is case-sensitive,
  but no mail system our readers use treats it so, and one person must stay one row: the rows
  stored before and the suppression list's keyed hashes were all made from lower-cased addresses.

The wire form (`wire`), for the SMTP envelope and the To header: ASCII whenever possible, the
domain as A-labels (punycode), so an IDN domain needs nothing from the server. Only a local part
that is itself non-ASCII keeps the UTF-8 form, and that one message then needs SMTPUTF8 (RFC 6531)
and a UTF-8 header (RFC 6532).
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import NewsletterError

# RFC 5321 caps a path at 256 octets, so an address at 254; beyond that is not an address at all.
MAX_LENGTH = 254
# What a stored ASCII address can look like (dot-atom local part, letters-digits-hyphens domain):
# such an address is its own wire form, without the cost of a full validation per message.
_PLAIN = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+")


class AddressError(NewsletterError, ValueError):
    """An address that cannot be stored or sent to; the message names it and what is wrong."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"{_shown(address)} is not a valid email address: {reason}")

    def __reduce__(self) -> tuple[type[AddressError], tuple[str, str]]:
        return (type(self), (self.address, self.reason))


def _shown(address: str) -> str:
    # Quoted (control characters escaped) and cut short: the message stays one readable line.
    return repr(address if len(address) <= 80 else address[:77] + "...")


def _reason(exc: EmailNotValidError) -> str:
    text = " ".join(str(exc).split()).rstrip(".")
    return text[:1].lower() + text[1:] if text else "not an email address"


def normalise(raw: str) -> str:
    """The stored form of `raw` (see the module), or AddressError saying what to fix."""
    text = raw.strip()
    if not text:
        raise AddressError(raw, "the address is empty")
    if len(text) > 4 * MAX_LENGTH:
        raise AddressError(raw, f"longer than {MAX_LENGTH} characters")
    try:
        checked = validate_email(text, check_deliverability=False).normalized.lower()
        if checked.isascii():
            return checked  # lower-casing ASCII changes no character's length or class
        # Lower-casing can change a character's length or class (a dotted capital I, say): the
        # stored form is validated again so it is always an address email-validator accepts.
        stored = validate_email(checked, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise AddressError(raw, _reason(exc)) from None
    return stored


def wire(address: str) -> str:
    """The form for the envelope and the To header of a stored address (see the module).

    Raises AddressError for a value that is not a valid address (a row stored by other means).
    """
    if address.isascii() and _PLAIN.fullmatch(address) and ".." not in address:
        return address
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AddressError(address, _reason(exc)) from None
    if checked.ascii_email is not None:
        return checked.ascii_email
    return checked.normalized


def needs_smtputf8(address: str) -> bool:
    """Whether a wire-form address can only travel with SMTPUTF8 (its local part is not ASCII)."""
    return not address.isascii()
