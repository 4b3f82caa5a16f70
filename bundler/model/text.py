"""Text for the terminal: untrusted text made safe to print, and sizes in IEC units.

Names, tags, annotations and messages that come from a bundle, an archive, a registry or a
config file can hold terminal escapes: ``ESC [ 32 m`` turns the rest of a line green, a carriage
return or a newline starts a fake line ("verified"), an OSC sequence retitles the window or
writes a hyperlink. :func:`printable` shows every such character as a visible escape instead.
"""

from __future__ import annotations

# C0 controls (newline, carriage return, ESC, BEL, ...), DEL and the C1 controls (CSI, OSC as
# single bytes), plus the Unicode controls that reorder or break lines on display: the bidi
# embeddings, overrides and isolates, and the line and paragraph separators.
_UNSAFE = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    *(0x200E, 0x200F, 0x061C, 0x2028, 0x2029),
]
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x1B: "\\x1b"}
_TABLE = {
    code: _NAMED.get(code, f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in _UNSAFE
}


def printable(text: object) -> str:
    r"""``str(text)`` with every control character shown as an escape (``\x1b``, ``\n``).

    Ordinary Unicode (accents, CJK, emoji) is kept as it is; only characters that move the
    cursor, change colours or the direction of text, or end a line are escaped.
    """
    return str(text).translate(_TABLE)


def human_bytes(n: int) -> str:
    """``n`` bytes in B, KiB, MiB or GiB (1024-based), one decimal above bytes."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover
