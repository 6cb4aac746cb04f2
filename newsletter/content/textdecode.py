"""Bytes of a journal text export to `str`: UTF-8, UTF-16 or GB18030, or a one-line error."""

from __future__ import annotations

import codecs
import unicodedata

from newsletter.content.charset import describe, first_bad_in_export
from newsletter.errors import ContentError

_REEXPORT = "export the issue from the PDF as plain text (UTF-8) and try again"
# Magic numbers of the files staff most often pick by mistake instead of the text export.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF file"),
    (b"PK\x03\x04", "a ZIP or Word (.docx) file"),
    (b"\xd0\xcf\x11\xe0", "a Word (.doc) or Excel file"),
    (b"{\\rtf", "an RTF file"),
)
_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with the UTF-16 one.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


class TextImportError(ContentError):
    """The journal text cannot be imported; `line` points into the input where it helps."""

    def __init__(self, source: str, problem: str, line: int | None = None) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {problem}")


class ControlCharacterError(TextImportError):
    """The text holds a control character (ESC, BEL, NUL...) or another invisible non-text one."""


class EmptyTextError(TextImportError):
    """The input holds no text at all."""


class BinaryTextError(TextImportError):
    """The input is a binary file (PDF, Word, image), not a text export."""


class UndecodableTextError(TextImportError):
    """The input is text in an encoding the importer cannot recognise."""


def decode_export(data: bytes, *, source: str) -> str:
    """Decode an export (BOM, UTF-8, UTF-16 by NUL pattern, then GB18030); line ends become LF."""
    if not data.strip():
        raise EmptyTextError(source, f"the file is empty; {_REEXPORT}")
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            raise BinaryTextError(source, f"this is {kind}, not the text export; {_REEXPORT}")
    text = normalise_newlines(_decode(data, source))
    if not text.strip():
        raise EmptyTextError(source, f"the file holds only blank lines; {_REEXPORT}")
    _refuse_control_characters(text, source)
    return text


def normalise_newlines(text: str) -> str:
    """CRLF and lone CR (old Mac tools) become LF; a leading BOM left in a str is dropped."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _decode(data: bytes, source: str) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _strict(data[len(bom) :], encoding, source)
    if b"\x00" in data:
        utf16 = _utf16_by_nuls(data)
        if utf16 is None:
            raise BinaryTextError(
                source, f"the file holds NUL bytes, so it is binary, not a text export; {_REEXPORT}"
            )
        return _strict(data, utf16, source)
    return _decode_bytewise(data, source)


def _decode_bytewise(data: bytes, source: str) -> str:
    """UTF-8, else GB18030; else say where the text breaks, or that it is binary after all."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        utf8_error = exc
    # Chinese Windows tools save as GBK/GB18030 unless told otherwise; GB18030 is a superset of GBK.
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError as exc:
        gb_error = exc
    if _mostly_undecodable(data):
        raise BinaryTextError(source, f"this is not text but binary data; {_REEXPORT}")
    # The encoding that read further is the file's, with a damaged byte where it stopped.
    error, name = (
        (utf8_error, "UTF-8") if utf8_error.start >= gb_error.start else (gb_error, "GB18030")
    )
    raise UndecodableTextError(
        source,
        f"byte {error.start} is not valid {name} (nor is the file UTF-16); "
        "save the export as UTF-8 and try again",
        data[: error.start].count(b"\n") + 1,
    )


def _utf16_by_nuls(data: bytes) -> str | None:
    """UTF-16 without a BOM has a NUL in the high byte of each ASCII character (digits, LF)."""
    if len(data) % 2:
        return None
    even_nuls = data[0::2].count(0)
    odd_nuls = data[1::2].count(0)
    units = len(data) // 2
    # A real export has far more NULs on one side than the other (the other side has a few from
    # characters such as 一, U+4E00); binary data has them on both sides alike.
    if odd_nuls >= units * 0.05 and even_nuls <= odd_nuls * 0.25:
        return "utf-16-le"
    if even_nuls >= units * 0.05 and odd_nuls <= even_nuls * 0.25:
        return "utf-16-be"
    return None


def _strict(data: bytes, encoding: str, source: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UndecodableTextError(
            source, f"byte {exc.start}: broken {encoding.upper()} text; save the export as UTF-8"
        ) from None


def _mostly_undecodable(data: bytes) -> bool:
    """Text in a wrong encoding has a few bad bytes; binary data has bad sequences everywhere."""
    decoded = data.decode("gb18030", errors="replace")
    return decoded.count("\ufffd") > len(decoded) * 0.1


def _refuse_control_characters(text: str, source: str) -> None:
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\t\f")
    if controls > max(2, len(text) // 200):
        raise BinaryTextError(
            source, f"the file is full of control characters, so it is not text; {_REEXPORT}"
        )
    # A few stray ones (an ESC or BEL pasted in) would pass conversion and break rendering.
    if bad := first_bad_in_export(text):
        problem = f"{describe(bad.char)} at column {bad.column}; remove it"
        raise ControlCharacterError(source, problem, bad.line)
