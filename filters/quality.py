"""Rule-based quality checks on the raw prompt and response text.

Each rule has a stable reason code, a score and a threshold: ``empty_prompt``, ``empty_response``,
``prompt_too_long``, ``response_too_short``, ``response_too_long``, ``repetition`` and
``symbol_ratio``. A sample is rejected by the first rule it fails, in that order. Kept samples get
a coarse ``quality_score`` that the dedup survivor choice reads.
"""

import logging
import re
from collections import Counter
from dataclasses import dataclass

import polars as pl

from filters.lang import uses_char_shingles
from filters.schema import StageResult, empty_ledger, ledger_rows

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")

# Ledger columns collected per sample before they become ledger rows.
_DECISION_SCHEMA = {
    "reason": pl.String,
    "score": pl.Float64,
    "threshold": pl.Float64,
    "detail": pl.String,
    "quality_score": pl.Float64,
}


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the quality rules. Lengths are Python characters (Unicode code points)."""

    min_response_chars: int = 1
    max_response_chars: int = 100_000
    max_prompt_chars: int = 200_000
    max_duplicate_line_ratio: float = 0.5
    max_duplicate_ngram_ratio: float = 0.8
    repetition_ngram_words: int = 8
    repetition_ngram_chars: int = 15
    max_symbol_ratio: float = 0.7

    def __post_init__(self) -> None:
        if self.min_response_chars < 1:
            raise ValueError(
                f"min_response_chars={self.min_response_chars} is invalid: it must be at least 1 "
                "(empty responses already have their own rule); use 1 to keep one-character answers."
            )
        if self.max_response_chars < self.min_response_chars:
            raise ValueError(
                f"max_response_chars={self.max_response_chars} is below min_response_chars="
                f"{self.min_response_chars}: every response would be rejected; raise max_response_chars."
            )
        if self.max_prompt_chars < 1:
            raise ValueError(f"max_prompt_chars={self.max_prompt_chars} is invalid: it must be at least 1.")
        for name in ("max_duplicate_line_ratio", "max_duplicate_ngram_ratio", "max_symbol_ratio"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(
                    f"{name}={value} is invalid: a ratio threshold must be in (0, 1]; use 1.0 to switch the rule off."
                )
        for name in ("repetition_ngram_words", "repetition_ngram_chars"):
            value = getattr(self, name)
            if not 1 <= value <= 50:
                raise ValueError(f"{name}={value} is invalid: the n-gram size must be in [1, 50].")


def duplicate_line_ratio(text: str) -> float:
    """Return the share of characters in non-blank lines that repeat an earlier line.

    Lines are compared after stripping surrounding whitespace. Lines with fewer than two letters
    or digits, such as a lone ``}`` or ``)``, are ignored so that code is not penalized for them.
    """
    seen: set[str] = set()
    total = 0
    duplicated = 0
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if sum(char.isalnum() for char in line) < 2:
            continue
        total += len(line)
        if line in seen:
            duplicated += len(line)
        else:
            seen.add(line)
    return duplicated / total if total else 0.0


def repetition_tokens(text: str, char_tokens: bool) -> list[str]:
    """Split text into the tokens the repetition rule counts: lowercased words, or characters."""
    if char_tokens:
        return [char for char in text.lower() if not char.isspace()]
    return _WORD.findall(text.lower())


def duplicate_ngram_ratio(tokens: list[str], n: int) -> float:
    """Return the share of tokens covered by an n-gram that occurs more than once in ``tokens``.

    Fewer than ``2 * n`` tokens give 0.0, because no
    n-gram can repeat without overlapping itself.
    """
    if len(tokens) < 2 * n:
        return 0.0
    ngrams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    counts = Counter(ngrams)
    covered = [False] * len(tokens)
    for start, ngram in enumerate(ngrams):
        if counts[ngram] > 1:
            for offset in range(n):
                covered[start + offset] = True
    return sum(covered) / len(tokens)


def symbol_ratio(text: str) -> float:
    """Return the share of non-whitespace characters that are neither letters nor digits."""
    visible = 0
    symbols = 0
    for char in text:
        if char.isspace():
            continue
        visible += 1
        if not char.isalnum():
            symbols += 1
    return symbols / visible if visible else 0.0


def _margin_score(value: float, threshold: float) -> float:
    # 1.0 up to half the threshold, then falling linearly to 0.0 at the threshold. Most texts sit
    # far from every limit and all score 1.0, so duplicates tie and the survivor rule's id
    # tie-break decides.
    if value <= threshold / 2:
        return 1.0
    return max(0.0, (threshold - value) / (threshold / 2))


@dataclass(frozen=True)
class _Decision:
    reason: str | None
    score: float | None
    threshold: float | None
    detail: str | None
    quality_score: float | None


# C0 and C1 control characters other than tab, line feed and carriage return: terminal escapes, NUL
# bytes and bells are never meant as training text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Invisible characters: whitespace, format characters (zero-width space, BOM) and controls.
_INVISIBLE = re.compile(r"[\s\u200b-\u200f\u2060-\u2064\ufeff\x00-\x1f\x7f-\x9f]+")


def _is_blank(text: str) -> bool:
    return not _INVISIBLE.sub("", text)


def _decide(prompt: str | None, response: str | None, lang: str | None, config: QualityConfig) -> _Decision:
    prompt = prompt or ""
    response = response or ""
    if _is_blank(prompt):
        return _Decision("empty_prompt", float(len(prompt)), None, "prompt is empty or only invisible characters", None)
    if _is_blank(response):
        return _Decision(
            "empty_response", float(len(response)), None, "response is empty or only invisible characters", None
        )
    for field, text in (("prompt", prompt), ("response", response)):
        control = _CONTROL.search(text)
        if control:
            detail = f"{field} contains control character U+{ord(control.group()):04X} at offset {control.start()}"
            return _Decision("control_characters", float(len(_CONTROL.findall(text))), 0.0, detail, None)
    if len(prompt) > config.max_prompt_chars:
        return _Decision("prompt_too_long", float(len(prompt)), float(config.max_prompt_chars), None, None)
    if len(response) < config.min_response_chars:
        return _Decision("response_too_short", float(len(response)), float(config.min_response_chars), None, None)
    if len(response) > config.max_response_chars:
        return _Decision("response_too_long", float(len(response)), float(config.max_response_chars), None, None)

    line_ratio = duplicate_line_ratio(response)
    if line_ratio > config.max_duplicate_line_ratio:
        return _Decision(
            "repetition", line_ratio, config.max_duplicate_line_ratio, "duplicate_line_ratio of the response", None
        )
    char_tokens = uses_char_shingles(lang, response)
    n = config.repetition_ngram_chars if char_tokens else config.repetition_ngram_words
    ngram_ratio = duplicate_ngram_ratio(repetition_tokens(response, char_tokens), n)
    if ngram_ratio > config.max_duplicate_ngram_ratio:
        unit = "character" if char_tokens else "word"
        detail = f"duplicate_ngram_ratio of the response, {unit} {n}-grams"
        return _Decision("repetition", ngram_ratio, config.max_duplicate_ngram_ratio, detail, None)
    symbols = symbol_ratio(response)
    if symbols > config.max_symbol_ratio:
        return _Decision("symbol_ratio", symbols, config.max_symbol_ratio, "symbol_ratio of the response", None)

    quality = min(
        _margin_score(line_ratio, config.max_duplicate_line_ratio),
        _margin_score(ngram_ratio, config.max_duplicate_ngram_ratio),
        _margin_score(symbols, config.max_symbol_ratio),
    )
    return _Decision(None, None, None, None, round(quality, 2))


def _decide_safely(prompt: str | None, response: str | None, lang: str | None, config: QualityConfig) -> _Decision:
    try:
        return _decide(prompt, response, lang, config)
    except Exception as error:  # one bad sample becomes a ledger row, never a failed batch
        return _Decision(f"error_{type(error).__name__}", None, None, str(error)[:500], None)


def apply_quality_rules(samples: pl.DataFrame, config: QualityConfig, *, stage: str = "stage1") -> StageResult:
    """Apply the quality rules to ``samples`` and add ``quality_score`` (Float64 in [0, 1]) to kept rows.

    ``quality_score`` is the lowest of the repetition and symbol margins, each 1.0 while the
    measured ratio is at most half its threshold and falling linearly to 0.0 at the threshold,
    rounded to 2 decimals so near-identical texts tie. Null prompt or response counts as empty.
    """
    decisions = [
        _decide_safely(prompt, response, lang, config)
        for prompt, response, lang in zip(samples["prompt"], samples["response"], samples["lang"], strict=True)
    ]
    decided = pl.DataFrame(
        {name: [getattr(decision, name) for decision in decisions] for name in _DECISION_SCHEMA},
        schema=_DECISION_SCHEMA,
    )
    scored = pl.concat([samples, decided], how="horizontal")
    failed = pl.col("reason").is_not_null()

    kept = scored.filter(~failed).drop("reason", "score", "threshold", "detail")
    rejected_rows = scored.filter(failed)
    rejected = (
        ledger_rows(
            rejected_rows,
            stage=stage,
            filter_name="quality",
            reason=pl.col("reason"),
            score=pl.col("score"),
            threshold=pl.col("threshold"),
            detail=pl.col("detail"),
        )
        if rejected_rows.height
        else empty_ledger()
    )
    result = StageResult(kept=kept, rejected=rejected, rows_in=samples.height)
    log.info("quality rules: %d in, %d kept, rejected by reason %s", samples.height, kept.height, result.reason_counts())
    return result
