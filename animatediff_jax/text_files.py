"""Reading a text file a user gave (a CSV, a JSON or YAML config, a tokenizer's vocabulary): UTF-8 or
refused with the first byte that is not, so the caller's one error line can say where."""
from __future__ import annotations

import json
import os


def decode_text(data: bytes, offset: int = 0) -> str:
    """`data`, a text file's bytes from `offset` on, as UTF-8 text; else ValueError `not UTF-8 text (byte 0xe9
    at offset 27)` at its first byte that is not (text in another encoding) or its first NUL (a binary
    file, UTF-16 text). The caller puts the file's name first."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = e.start
    else:
        if "\0" not in text:
            return text
        bad = data.index(b"\0")
    raise ValueError(f"not UTF-8 text (byte 0x{data[bad]:02x} at offset {offset + bad})")


def read_text(path: str | os.PathLike) -> str:
    """The text of file `path`: `decode_text`'s ValueError when it is not UTF-8 text, OSError when unreadable."""
    with open(path, "rb") as f:
        return decode_text(f.read())


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object in file `path`; ValueError `not UTF-8 text (...)`, `not JSON (...)` or `must hold
    a JSON object, got list` for a file that is not one (the caller names the file), OSError when unreadable."""
    try:
        value = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"must hold a JSON object, got {type(value).__name__}")
    return value
