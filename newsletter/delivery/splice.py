"""Base64 body parts encoded once per profile, with per-recipient values spliced into the encoding.

A part is static text with a few placeholders. Base64 works in 3-byte groups, so the static stretches
are encoded once, for each of the three alignments they can start at; per recipient only the small
stretch around each value (at most two static bytes either side) is encoded. Lines end at every piece
boundary, which RFC 2045 allows (lines of at most 76 characters, not exactly 76).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

LINE = 57  # input bytes per 76-character base64 line


def b64_lines(data: bytes) -> bytes:
    """Base64 with CRLF after every 76 characters and at the end (empty input: nothing)."""
    return b"".join(
        binascii.b2a_base64(data[i : i + LINE], newline=False) + b"\r\n"
        for i in range(0, len(data), LINE)
    )


@dataclass(frozen=True)
class _Static:
    """One static stretch, pre-encoded for each phase (its offset in the part, modulo 3)."""

    data: bytes
    # phase -> (bytes that finish the previous group, encoded middle, bytes left for the next)
    variants: tuple[tuple[bytes, bytes, bytes], ...]

    @classmethod
    def of(cls, data: bytes) -> _Static:
        variants = []
        for phase in range(3):
            head_len = (3 - phase) % 3
            body_end = head_len + (len(data) - head_len) // 3 * 3
            variants.append((data[:head_len], b64_lines(data[head_len:body_end]), data[body_end:]))
        return cls(data, tuple(variants))


@dataclass(frozen=True)
class SplicedPart:
    """A part's pieces: static stretches (long enough to pre-encode) and slots between them."""

    statics: tuple[_Static, ...]
    # Between statics[i] and statics[i+1]: a run of placeholders and short static bytes.
    slots: tuple[tuple[str | bytes, ...], ...]

    def encode(self, values: Mapping[str, bytes]) -> bytes:
        """The whole part in base64 for one recipient's values."""
        first_head, first_body, carry = self.statics[0].variants[0]
        out = [b64_lines(first_head) if first_head else b"", first_body]
        offset = len(self.statics[0].data)
        for slot, static in zip(self.slots, self.statics[1:], strict=True):
            middle = b"".join(values[p] if isinstance(p, str) else p for p in slot)
            offset += len(middle)
            head, body, tail = static.variants[offset % 3]
            out.append(b64_lines(carry + middle + head))
            out.append(body)
            carry = tail
            offset += len(static.data)
        out.append(b64_lines(carry))
        return b"".join(out)


def split_part(text: str, placeholder: re.Pattern[str], *, min_static: int = 3) -> SplicedPart:
    """Cut `text` at its placeholders; static stretches shorter than `min_static` bytes go to slots."""
    pieces = placeholder.split(text)
    tokens = placeholder.findall(text)
    statics: list[_Static] = [_Static.of(pieces[0].encode())]
    slots: list[tuple[str | bytes, ...]] = []
    run: list[str | bytes] = []
    last = len(tokens) - 1
    for index, (token, after) in enumerate(zip(tokens, pieces[1:], strict=True)):
        run.append(token)
        data = after.encode()
        # A stretch shorter than a base64 group cannot realign the stream; the last one ends it.
        if len(data) < min_static and index != last:
            run.append(data)
            continue
        slots.append(tuple(run))
        statics.append(_Static.of(data))
        run = []
    return SplicedPart(tuple(statics), tuple(slots))
