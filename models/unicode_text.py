"""What makes a user's text unfit to store or send: unpaired surrogates, NUL, invisible format characters."""

from __future__ import annotations

import unicodedata


def unpaired_surrogate(text: str) -> str | None:
    """The first unpaired surrogate in `text`, written as its escape (`\\ud800`); None if `text` encodes as UTF-8.

    JSON's `"\\ud800"` escape decodes to such a code point, which no UTF-8 encoder, database or
    response can carry: text holding one is refused where it arrives, never stored.
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"\\u{ord(text[error.start]):04x}"
    return None


def unstorable_text_fault(text: str) -> str | None:
    """What makes `text` unfit to store, and what to do, as a sentence's end ("holds …"); None if it is fit.

    PostgreSQL's text columns refuse NUL, so a request string holding one would fail in the database.
    """
    surrogate = unpaired_surrogate(text)
    if surrogate is not None:
        return (
            f"holds text that is not valid Unicode (an unpaired surrogate {surrogate}); send UTF-8 text, where an "
            "escaped surrogate comes only in pairs"
        )
    if "\x00" in text:
        return "holds a NUL character (\\u0000), which cannot be stored; remove it"
    return None


def escape_surrogates(text: str) -> str:
    """`text` with each unpaired surrogate written out as its escape, so it always encodes as UTF-8."""
    return text if unpaired_surrogate(text) is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def strip_format_characters(text: str) -> str:
    """`text` without Unicode format characters (category Cf): bidirectional controls such as U+202E,
    which make a name display in an order other than its own, zero-width characters and the like."""
    if text.isascii():
        return text
    return "".join(char for char in text if unicodedata.category(char) != "Cf")
