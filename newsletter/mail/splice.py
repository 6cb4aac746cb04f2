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


def b64_lines(data: bytes) -> bytes:
    """Base64 with CRLF after every 76 characters and at the end (empty input: nothing)."""
    # Encode in one C call, then cut: a b2a_base64 call per 57-byte line costs more than the
    # encoding itself on a 100 KB part.
    encoded = binascii.b2a_base64(data, newline=False)
    if not encoded:
        return b""
    return b"\r\n".join([encoded[i : i + 76] for i in range(0, len(encoded), 76)]) + b"\r\n"


class _Static:
    """One static stretch, encoded once for each phase it is met at (its offset modulo 3)."""

    __slots__ = ("data", "_variants")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._variants: list[tuple[bytes, bytes, bytes] | None] = [None, None, None]

    def variant(self, phase: int) -> tuple[bytes, bytes, bytes]:
        """(bytes that finish the previous group, encoded middle, bytes left for the next)."""
        found = self._variants[phase]
        if found is None:
            head_len = (3 - phase) % 3
            body_end = head_len + (len(self.data) - head_len) // 3 * 3
            found = (
                self.data[:head_len],
                b64_lines(self.data[head_len:body_end]),
                self.data[body_end:],
            )
            self._variants[phase] = found
        return found


@dataclass(frozen=True)
class SplicedPart:
    """A part's pieces: static stretches (long enough to pre-encode) and slots between them."""

    statics: tuple[_Static, ...]
    # Between statics[i] and statics[i+1]: a run of placeholders and short static bytes.
    slots: tuple[tuple[str | bytes, ...], ...]

    def pieces(self, values: Mapping[str, bytes]) -> list[bytes]:
        """The whole part in base64 for one recipient's values, in pieces to be joined.

        The long pieces are the statics' encodings, the same objects for every recipient: a batch
        of messages holds (and pickles) them once per profile, not once per message.
        """
        first_head, first_body, carry = self.statics[0].variant(0)
        out = [b64_lines(first_head) if first_head else b"", first_body]
        offset = len(self.statics[0].data)
        for slot, static in zip(self.slots, self.statics[1:], strict=True):
            middle = b"".join([values[p] if isinstance(p, str) else p for p in slot])
            offset += len(middle)
            head, body, tail = static.variant(offset % 3)
            out.append(b64_lines(carry + middle + head))
            out.append(body)
            carry = tail
            offset += len(static.data)
        out.append(b64_lines(carry))
        return out

    def encode(self, values: Mapping[str, bytes]) -> bytes:
        """The whole part in base64 for one recipient's values."""
        return b"".join(self.pieces(values))


def split_part(text: str, placeholder: re.Pattern[str], *, min_static: int = 3) -> SplicedPart:
    """Cut `text` at its placeholders; static stretches shorter than `min_static` bytes go to slots."""
    pieces = placeholder.split(text)
    tokens = placeholder.findall(text)
    statics: list[_Static] = [_Static(pieces[0].encode())]
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
        statics.append(_Static(data))
        run = []
    return SplicedPart(tuple(statics), tuple(slots))
