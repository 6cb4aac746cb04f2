"""Staff credentials: argon2id passwords, TOTP secrets sealed with the instance key, recovery
codes and session tokens kept only as hashes. Pure functions: no database, no clock of their own.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from newsletter.roles import StaffError

MIN_PASSWORD = 12
RECOVERY_CODES = 10
ISSUER = "newsletter"

# argon2-cffi's defaults are RFC 9106's second recommended profile, argon2id.
_hasher = PasswordHasher()
# Verified against when the address is unknown, so a miss costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def check_password(password: str, email: str) -> None:
    """Refuse a password a guesser would try early: short, one repeated pattern, the address."""
    if not password.strip():
        raise StaffError("the password is empty; give one on standard input (--password-stdin)")
    if len(password) < MIN_PASSWORD:
        raise StaffError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if len(set(password)) < 5:
        raise StaffError("the password repeats too few characters: use at least 5 different ones")
    local = email.split("@", 1)[0].lower()
    if len(local) >= 4 and local in password.lower():
        raise StaffError("the password contains the e-mail address: choose another")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; an unknown account (None) takes as long and says no."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def _key(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


def seal(secret: bytes, plain: str) -> str:
    """`plain` encrypted (AES-256-GCM) under a key derived from the instance secret."""
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_key(secret, b"newsletter staff totp")).encrypt(nonce, plain.encode(), b"totp")
    return base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(secret: bytes, sealed: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(sealed.encode())
        key = _key(secret, b"newsletter staff totp")
        return AESGCM(key).decrypt(raw[:12], raw[12:], b"totp").decode()
    except (InvalidTag, ValueError):
        raise StaffError(
            "the second-factor secret cannot be read with this instance's secret_key "
            "(was it changed?); reset it with `newsletter staff reset-2fa`"
        ) from None


@dataclass(frozen=True)
class Enrolment:
    """A new second factor, shown once: the secret, its otpauth:// URI and recovery codes."""

    totp_secret: str
    otpauth_uri: str
    recovery_codes: tuple[str, ...]


def otpauth_uri(totp_secret: str, email: str, issuer: str = ISSUER) -> str:
    return pyotp.TOTP(totp_secret).provisioning_uri(name=email, issuer_name=issuer)


def new_enrolment(email: str, issuer: str = ISSUER) -> Enrolment:
    secret = pyotp.random_base32()
    uri = otpauth_uri(secret, email, issuer)
    codes = tuple("-".join(secrets.token_hex(2) for _ in range(3)) for _ in range(RECOVERY_CODES))
    return Enrolment(secret, uri, codes)


def qr_svg(uri: str) -> str:
    """The URI as an inline `<svg>` for the enrolment page (no script, no style attribute)."""
    qr = segno.make(uri, error="m")
    return str(qr.svg_inline(scale=4, dark="#000", light="#fff", title="二维码 QR code"))


def totp_step(totp_secret: str, code: str, at: dt.datetime, after_step: int) -> int | None:
    """The time step `code` is valid for (one step of clock skew either way), if later than
    `after_step`: a code already used cannot be used again."""
    digits = "".join(code.split())
    if not digits.isdigit() or len(digits) != 6:
        return None
    totp = pyotp.TOTP(totp_secret)
    now = totp.timecode(at)
    for offset in (0, -1, 1):
        step = now + offset
        if step > after_step and hmac.compare_digest(totp.generate_otp(step), digits):
            return step
    return None


def hash_code(secret: bytes, code: str) -> str:
    """A recovery code as stored: keyed, so a database dump alone cannot test guesses."""
    normal = "".join(code.lower().split()).replace("-", "")
    return hmac.new(_key(secret, b"newsletter recovery"), normal.encode(), "sha256").hexdigest()


def new_token() -> tuple[str, str]:
    """A session token for the cookie, and the hash the database keeps instead of it."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
