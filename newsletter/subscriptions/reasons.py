"""The reason staff give for changing a person's status on their own say: the audit's "why"."""

from __future__ import annotations

import unicodedata

from newsletter.errors import NewsletterError

MAX_REASON = 500


def audit_reason(reason: str, *, error: type[NewsletterError], missing: str) -> str:
    """`reason` on one line; `error(missing)` when empty, `error` too when too long or not text."""
    text = " ".join(reason.split())
    if not text:
        raise error(missing)
    if len(text) > MAX_REASON or any(unicodedata.category(ch) == "Cc" for ch in text):
        raise error(
            f"--reason: use plain text of at most {MAX_REASON} characters, no control characters"
        )
    return text
