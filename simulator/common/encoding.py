"""Text files must be UTF-8: the first byte that is not, and the message that names it."""

from __future__ import annotations

import codecs
from pathlib import Path

from simulator.common.errors import ConfigError

_CHUNK = 1 << 20


def not_utf8(source: str, data: bytes, exc: UnicodeDecodeError, offset: int = 0) -> ConfigError:
    at = offset + exc.start
    return ConfigError(
        f"{source}: not UTF-8 text: byte {at:,} (0x{data[exc.start]:02x}) cannot be decoded "
        f"({exc.reason}); save the file as UTF-8"
    )


def decode_utf8(data: bytes, source: str) -> str:
    """Bytes as UTF-8 text (a leading byte-order mark dropped), naming the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise not_utf8(source, data, exc) from None


def check_utf8(path: Path) -> None:
    """Raise the message naming the first byte of `path` that is not UTF-8 (reads in chunks)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:  # exc.object: bytes held back from the last chunk + this one
                start = offset - (len(exc.object) - len(chunk))
                raise not_utf8(str(path), exc.object, exc, start) from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: not UTF-8 text: the file ends inside a character ({exc.reason})"
            ) from None
