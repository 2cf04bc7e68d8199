"""Text normalization for duplicate keys; the stored training text is never rewritten here.

``dedup_key`` maps texts that differ only in invisible characters, Unicode compatibility forms,
line endings and whitespace to one key, but keeps the line structure and indentation of code so
that two programs that differ only in indentation keep different keys.
"""

import functools
import re
import sys
import unicodedata

# Zero-width space, non-joiner and joiner, word joiner, and the byte order mark. All are category
# Cf, and NFKC keeps every one of them.
ZERO_WIDTH_CHARS = "\u200b\u200c\u200d\u2060\ufeff"
_ZERO_WIDTH_TABLE = str.maketrans("", "", ZERO_WIDTH_CHARS)

# A Markdown code fence: three or more backticks or tildes at the start of a line.
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
_WHITESPACE_RUN = re.compile(r"\s+")
_INDENTED_LINE = re.compile(r"^[ \t]+\S")


def clean_text(text: str) -> str:
    """Remove the byte order mark and zero-width characters, and change nothing else."""
    return text.translate(_ZERO_WIDTH_TABLE)


@functools.cache
def _format_char_pattern() -> re.Pattern[str]:
    # Built once per process from this Python's Unicode database (about 0.3 s).
    format_chars = [chr(code) for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) == "Cf"]
    return re.compile("[" + "".join(re.escape(char) for char in format_chars) + "]")


def _remove_format_chars(text: str) -> str:
    if text.isascii():  # no ASCII character is in category Cf
        return text
    return _format_char_pattern().sub("", text)


def _split_fenced_blocks(lines: list[str]) -> list[tuple[bool, list[str]]]:
    """Split lines into alternating (is_code, lines) segments at Markdown code fences.

    Fence lines belong to the code segment. An unclosed fence makes the rest of the text code,
    because keeping structure is the safe side for a duplicate key.
    """
    segments: list[tuple[bool, list[str]]] = []
    current: list[str] = []
    open_fence: str | None = None
    for line in lines:
        match = _FENCE.match(line)
        if open_fence is None and match:
            if current:
                segments.append((False, current))
            current = [line]
            open_fence = match.group(1)
        elif open_fence is not None and match and match.group(1).startswith(open_fence[0] * len(open_fence)):
            current.append(line)
            segments.append((True, current))
            current = []
            open_fence = None
        else:
            current.append(line)
    if current:
        segments.append((open_fence is not None, current))
    return segments


def _key_of_prose(lines: list[str]) -> str:
    # A segment with an indented line after its first non-blank line is treated as unfenced
    # code, so its lines and indentation stay in the key. Plain prose is reflowed: every
    # whitespace run, line breaks included, becomes one space. Leading spaces before the first
    # line are ignored because a prose response often starts with them.
    non_blank = [line for line in lines if line.strip()]
    if any(_INDENTED_LINE.match(line) for line in non_blank[1:]):
        return _key_of_code(lines)
    return _WHITESPACE_RUN.sub(" ", " ".join(lines)).strip()


def _key_of_code(lines: list[str]) -> str:
    kept = [line.rstrip() for line in lines]
    while kept and not kept[0]:
        kept.pop(0)
    while kept and not kept[-1]:
        kept.pop()
    return "\n".join(kept)


def dedup_key(text: str | None) -> str:
    """Return the exact-dedup key of ``text``.

    Steps: NFKC, drop every format (Cf) character (zero-width characters, the BOM, soft hyphens),
    turn CRLF and CR into LF, then handle each segment. Fenced code blocks, and any segment with
    an indented line, keep their lines and indentation and lose only trailing spaces. Other text
    has every whitespace run, line breaks included, collapsed to one space. ``None`` gives ``""``.
    """
    if not text:
        return ""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = _remove_format_chars(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts = []
    for is_code, lines in _split_fenced_blocks(text.split("\n")):
        part = _key_of_code(lines) if is_code else _key_of_prose(lines)
        if part:
            parts.append(part)
    return "\n".join(parts)
