"""Benchmark decontamination by n-gram overlap with evaluation prompts.

Each eval item's prompt becomes a set of n-grams: word n-grams (default 8) for spaced
languages, character n-grams (default 12) for Chinese, Japanese and other spaceless text, as
``filters.lang.uses_char_shingles`` decides per text. Text is normalized first (NFKC, lowercase,
punctuation and symbols removed, whitespace collapsed), so re-wrapped, re-punctuated or
re-cased copies still match, and a copy embedded in a longer prompt matches too because only
the eval item's n-grams are counted.

The overlap ratio of a training text with an eval item is the share of the item's n-grams
found in the text. N-grams shared by many items of a benchmark (instruction boilerplate such as
"Solve the following math problem step by step") are dropped from every item first, as are the
n-grams of configured boilerplate phrases, so a training row that only shares that boilerplate
does not match. A training row's prompt is checked first, then its response; the row is
contaminated when either reaches ``min_overlap_ratio`` for some item.
"""

import logging
import unicodedata
from dataclasses import dataclass

import polars as pl
import xxhash

from filters.lang import uses_char_shingles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecontamConfig:
    """N-gram sizes and thresholds for decontamination.

    Attributes:
        word_ngram: n-gram size in words for spaced languages.
        char_ngram: n-gram size in characters for spaceless languages (zh, ja, th, ...).
        min_overlap_ratio: share (0 to 1] of an eval item's n-grams that a training text must
            contain to count as contaminated.
        max_boilerplate_item_ratio: an n-gram in more than this share of a benchmark's items
            is boilerplate and ignored (only for benchmarks with ``min_items_for_boilerplate``
            items or more, because a share among two items is not informative).
        min_items_for_boilerplate: see ``max_boilerplate_item_ratio``.
        boilerplate_phrases: extra phrases whose n-grams are always ignored.
    """

    word_ngram: int = 8
    char_ngram: int = 12
    min_overlap_ratio: float = 0.5
    max_boilerplate_item_ratio: float = 0.1
    min_items_for_boilerplate: int = 10
    boilerplate_phrases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 3 <= self.word_ngram <= 50:
            raise ValueError(f"word_ngram={self.word_ngram} is invalid: use 3 to 50 words (8 is common)")
        if not 3 <= self.char_ngram <= 100:
            raise ValueError(f"char_ngram={self.char_ngram} is invalid: use 3 to 100 characters")
        if not 0.0 < self.min_overlap_ratio <= 1.0:
            raise ValueError(f"min_overlap_ratio={self.min_overlap_ratio} is invalid: use a share in (0, 1]")
        if not 0.0 < self.max_boilerplate_item_ratio <= 1.0:
            raise ValueError(
                f"max_boilerplate_item_ratio={self.max_boilerplate_item_ratio} is invalid: use a share in (0, 1]"
            )
        if self.min_items_for_boilerplate < 2:
            raise ValueError(f"min_items_for_boilerplate={self.min_items_for_boilerplate} is invalid: use 2 or more")
        if isinstance(self.boilerplate_phrases, str):
            raise ValueError("boilerplate_phrases is a single string: pass a tuple of phrases, e.g. ('Answer:',)")


def normalize_for_overlap(text: str) -> str:
    """NFKC, lowercase, punctuation and symbols to spaces, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    kept = [" " if unicodedata.category(char)[0] in "PSZC" else char for char in text]
    return " ".join("".join(kept).split())


def text_ngrams(text: str | None, lang: str | None, config: DecontamConfig) -> set[int]:
    """Return the 64-bit hashes of the text's word or character n-grams (empty when too short).

    Character n-grams skip spaces, so a re-wrapped Chinese line still matches. The two kinds
    are hashed with different prefixes and never match each other.
    """
    if not text:
        return set()
    normalized = normalize_for_overlap(text)
    if uses_char_shingles(lang, normalized):
        chars = normalized.replace(" ", "")
        size = config.char_ngram
        grams = ("c" + chars[i : i + size] for i in range(len(chars) - size + 1))
    else:
        words = normalized.split()
        size = config.word_ngram
        grams = ("w" + " ".join(words[i : i + size]) for i in range(len(words) - size + 1))
    return {xxhash.xxh3_64_intdigest(gram.encode("utf-8")) for gram in grams}


class EvalIndex:
    """An inverted index from n-gram hash to eval items, with boilerplate n-grams removed.

    An item with no n-gram left (shorter than one n-gram, or boilerplate only) cannot be
    matched. Such items are counted in ``too_short_per_benchmark`` and in the contamination table.
    """

    def __init__(self, eval_sets: pl.DataFrame, config: DecontamConfig):
        missing = {"benchmark", "item_id", "prompt"} - set(eval_sets.columns)
        if missing:
            raise ValueError(f"eval_sets is missing columns {sorted(missing)}: it needs benchmark, item_id and prompt")
        self.config = config
        self.benchmarks: list[str] = []
        self.item_ids: list[str] = []
        self.item_sizes: list[int] = []
        self.items_per_benchmark: dict[str, int] = {}
        self.too_short_per_benchmark: dict[str, int] = {}
        self.postings: dict[int, list[int]] = {}

        lang_column = eval_sets["lang"] if "lang" in eval_sets.columns else pl.Series([None] * eval_sets.height)
        rows = zip(eval_sets["benchmark"].to_list(), eval_sets["item_id"].cast(pl.String).to_list(), eval_sets["prompt"].to_list(), lang_column.to_list())
        grams_by_item = []
        for benchmark, item_id, prompt, lang in rows:
            self.items_per_benchmark[benchmark] = self.items_per_benchmark.get(benchmark, 0) + 1
            grams_by_item.append((benchmark, item_id, text_ngrams(prompt, lang, config)))

        boilerplate = self._boilerplate(grams_by_item)
        for phrase in config.boilerplate_phrases:
            boilerplate |= text_ngrams(phrase, None, config)

        for benchmark, item_id, grams in grams_by_item:
            grams = grams - boilerplate
            if not grams:
                self.too_short_per_benchmark[benchmark] = self.too_short_per_benchmark.get(benchmark, 0) + 1
                continue
            index = len(self.item_ids)
            self.benchmarks.append(benchmark)
            self.item_ids.append(item_id)
            self.item_sizes.append(len(grams))
            for gram in grams:
                self.postings.setdefault(gram, []).append(index)
        self.boilerplate_ngrams = len(boilerplate)
        log.info(
            "eval index: %d items from %d benchmarks, %d n-grams, %d boilerplate n-grams ignored, %d items too short",
            len(self.item_ids), len(self.items_per_benchmark), len(self.postings), len(boilerplate),
            sum(self.too_short_per_benchmark.values()),
        )

    def _boilerplate(self, grams_by_item: list[tuple[str, str, set[int]]]) -> set[int]:
        document_frequency: dict[str, dict[int, int]] = {}
        for benchmark, _, grams in grams_by_item:
            counts = document_frequency.setdefault(benchmark, {})
            for gram in grams:
                counts[gram] = counts.get(gram, 0) + 1
        boilerplate: set[int] = set()
        for benchmark, counts in document_frequency.items():
            items = self.items_per_benchmark[benchmark]
            if items < self.config.min_items_for_boilerplate:
                continue
            limit = self.config.max_boilerplate_item_ratio * items
            boilerplate.update(gram for gram, count in counts.items() if count > limit)
        return boilerplate

    def best_match(self, grams: set[int]) -> tuple[int, float] | None:
        """Return (item index, overlap ratio) of the eval item with the highest overlap, or None."""
        hits: dict[int, int] = {}
        for gram in grams:
            for index in self.postings.get(gram, ()):
                hits[index] = hits.get(index, 0) + 1
        if not hits:
            return None
        # Ties go to the lowest index, so the result does not depend on set iteration order.
        index = min(hits, key=lambda item: (-hits[item] / self.item_sizes[item], item))
        return index, hits[index] / self.item_sizes[index]


MATCH_SCHEMA = {
    "sample_id": pl.String,
    "field": pl.String,
    "benchmark": pl.String,
    "item_id": pl.String,
    "overlap_ratio": pl.Float64,
}


def match_rows(frame: pl.DataFrame, index: EvalIndex) -> pl.DataFrame:
    """Return the best eval match (any ratio above 0) of every row, prompt first, then response.

    Columns: ``sample_id``, ``field`` ("prompt" or "response"), ``benchmark``, ``item_id``,
    ``overlap_ratio``. Rows without any shared n-gram are absent.
    """
    threshold = index.config.min_overlap_ratio
    lang_column = frame["lang"] if "lang" in frame.columns else pl.Series([None] * frame.height)
    rows = zip(frame["sample_id"].to_list(), frame["prompt"].to_list(), frame["response"].to_list(), lang_column.to_list())
    matches = []
    for sample_id, prompt, response, lang in rows:
        best = None
        for field, text in (("prompt", prompt), ("response", response)):
            found = index.best_match(text_ngrams(text, lang, index.config))
            if found is not None and (best is None or found[1] > best[2]):
                best = (field, found[0], found[1])
            if best is not None and best[2] >= threshold:
                break  # the prompt already matched; the response cannot change the verdict
        if best is not None:
            field, item, ratio = best
            matches.append((sample_id, field, index.benchmarks[item], index.item_ids[item], ratio))
    return pl.DataFrame(matches, schema=MATCH_SCHEMA, orient="row")


def find_contamination(train: pl.DataFrame, eval_sets: pl.DataFrame, config: DecontamConfig) -> pl.DataFrame:
    """Return the rows of ``train`` that match an eval item at ``min_overlap_ratio`` or more.

    Works on any frame with ``sample_id``, ``prompt`` and ``response`` (``lang`` optional), so an
    asset check can run it on a stage's output and fail when the result is not empty.
    """
    index = EvalIndex(eval_sets, config)
    matches = match_rows(train, index)
    return matches.filter(pl.col("overlap_ratio") >= config.min_overlap_ratio)


def contamination_table(index: EvalIndex, contaminated: pl.DataFrame) -> pl.DataFrame:
    """Summarize per benchmark: eval items, matched training rows and matched eval items."""
    rows = []
    for benchmark in sorted(index.items_per_benchmark):
        matched = contaminated.filter(pl.col("benchmark") == benchmark)
        rows.append(
            (
                benchmark,
                index.items_per_benchmark[benchmark],
                index.too_short_per_benchmark.get(benchmark, 0),
                matched.height,
                matched["item_id"].n_unique(),
            )
        )
    schema = {
        "benchmark": pl.String,
        "n_eval_items": pl.Int64,
        "n_eval_items_too_short": pl.Int64,
        "n_matched_train_rows": pl.Int64,
        "n_matched_eval_items": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")

