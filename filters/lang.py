"""Script-based language detection, and the shingling choice that follows from it.

Sources usually state a sample's language; this is the fallback. It reads Unicode scripts, so it
tells Chinese, Japanese, Korean, Thai, Cyrillic, Arabic, Devanagari and Latin text apart. Inside
the Latin script it only recognizes English (by stopwords); other Latin-script text is ``und``.
"""

import re

# Languages written without spaces between words: shingle them by characters, not words.
CHAR_SHINGLE_LANGS = frozenset({"zh", "ja", "th", "lo", "km", "my"})

_ENGLISH_STOPWORDS = frozenset(
    "the a an and or of to in is are was were be it that this for on with as by at from not "
    "you i he she we they have has had do does did what how why which who can will would".split()
)
_WORD = re.compile(r"[A-Za-z]+")


# One character class per script; counting with regular expressions keeps detection in C.
_SCRIPTS = {
    "kana": re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]"),
    "han": re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff]"),
    "hangul": re.compile(r"[\uac00-\ud7af\u1100-\u11ff]"),
    "thai": re.compile(r"[\u0e00-\u0e7f]"),
    "cyrillic": re.compile(r"[\u0400-\u04ff]"),
    "arabic": re.compile(r"[\u0600-\u06ff]"),
    "devanagari": re.compile(r"[\u0900-\u097f]"),
    "latin": re.compile(r"[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f]"),
}


def _script_counts(text: str) -> dict[str, int]:
    counts = {}
    for script, pattern in _SCRIPTS.items():
        found = len(pattern.findall(text))
        if found:
            counts[script] = found
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
