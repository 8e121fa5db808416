"""Reading a user's text file (a roster, custom personalities): bounded, decoded, parsed.

Every problem is a TextFileError whose message is one line a user can act on:
too big, not text, not UTF-8 (with what it looks like instead), not JSON,
nested too deeply. The CLI and the dashboard's upload share this wording.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

# Far more than any roster of 100,000 members needs; reading /dev/zero stops here.
MAX_FILE_BYTES = 64 * 1024 * 1024


class TextFileError(ValueError):
    """A file that cannot be read as the text it should be; the message is one line."""


def read_bytes(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """At most limit bytes of path; TextFileError if there are more. OSError as the OS reports it."""
    with open(path, "rb") as handle:
        content = handle.read(limit + 1)
    if len(content) > limit:
        raise TextFileError(f"the file is larger than {limit // (1024 * 1024)} MB")
    return content


def decode(content: bytes) -> str:
    """UTF-8 text (a byte-order mark is allowed and dropped); TextFileError naming what else it is."""
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise TextFileError("the file is UTF-16/UTF-32 text; save it as UTF-8")
    if b"\x00" in content:
        raise TextFileError("the file is not text (it contains NUL bytes)")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TextFileError(
            f"the file is not UTF-8 text (byte 0x{content[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None


def read_text(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    return decode(read_bytes(path, limit))


def load_json(text: str) -> object:
    """The JSON value of text; TextFileError if it is not JSON, nests too deeply or holds NaN/Infinity."""

    def refuse_constant(name: str) -> object:
        raise TextFileError(f"the JSON holds {name}, which is not a number JSON allows")

    try:
        return json.loads(text, parse_constant=refuse_constant)
    except TextFileError:
        raise
    except json.JSONDecodeError as exc:
        raise TextFileError(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except ValueError:  # e.g. an integer of more than 4,300 digits
        raise TextFileError("not valid JSON (a number in it is too long)") from None
    except RecursionError:
        raise TextFileError("the JSON nests too deeply (a roster or personality list needs 3 levels)") from None
