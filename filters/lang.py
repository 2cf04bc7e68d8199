"""Script-based language detection, and the shingling choice that follows from it.

Sources usually state a sample's language; this is the fallback. It reads Unicode scripts, so it
tells Chinese, Japanese, Korean, Thai, Cyrillic, Arabic, Devanagari and Latin text apart. Inside
the Latin script it only recognizes English (by stopwords); other Latin-script text is ``und``.
"""

import re
import unicodedata

# Languages written without spaces between words: shingle them by characters, not words.
CHAR_SHINGLE_LANGS = frozenset({"zh", "ja", "th", "lo", "km", "my"})

_ENGLISH_STOPWORDS = frozenset(
    "the a an and or of to in is are was were be it that this for on with as by at from not "
    "you i he she we they have has had do does did what how why which who can will would".split()
)
_WORD = re.compile(r"[A-Za-z]+")


def _script_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for char in text:
        code = ord(char)
        if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF:
            script = "kana"
        elif 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF:
            script = "han"
        elif 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF:
            script = "hangul"
        elif 0x0E00 <= code <= 0x0E7F:
            script = "thai"
        elif 0x0400 <= code <= 0x04FF:
            script = "cyrillic"
        elif 0x0600 <= code <= 0x06FF:
            script = "arabic"
        elif 0x0900 <= code <= 0x097F:
            script = "devanagari"
        elif char.isalpha() and unicodedata.name(char, "").startswith("LATIN"):
            script = "latin"
        else:
            continue
        counts[script] = counts.get(script, 0) + 1
    return counts


def detect_lang(text: str) -> str:
    """Return an ISO 639-1 code for ``text``, or ``"und"`` when the script does not decide it.

    Han characters with any kana mean Japanese; Han alone means Chinese. Latin text counts as
    English when at least 20% of its words are common English function words.
    """
    counts = _script_counts(text)
    if not counts:
        return "und"
    if counts.get("kana", 0) > 0 and counts.get("kana", 0) + counts.get("han", 0) >= 0.2 * sum(counts.values()):
        return "ja"
    top = max(counts, key=lambda script: (counts[script], script))
    by_script = {"han": "zh", "hangul": "ko", "thai": "th", "cyrillic": "ru", "arabic": "ar", "devanagari": "hi"}
    if top in by_script:
        return by_script[top]
    if top == "latin":
        words = [w.lower() for w in _WORD.findall(text)]
        if words and sum(w in _ENGLISH_STOPWORDS for w in words) >= 0.2 * len(words):
            return "en"
    return "und"


def uses_char_shingles(lang: str | None, text: str) -> bool:
    """Decide per sample whether to shingle by characters.

    True for languages written without spaces, and for any text in which Han, kana or Thai
    characters make up at least 30% of the letters, whatever the stated language.
    """
    if lang in CHAR_SHINGLE_LANGS:
        return True
    counts = _script_counts(text)
    total = sum(counts.values())
    spaceless = counts.get("han", 0) + counts.get("kana", 0) + counts.get("thai", 0)
    return total > 0 and spaceless >= 0.3 * total
