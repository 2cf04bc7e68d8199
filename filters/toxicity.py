"""Toxicity scoring with chunking, and the ``toxic`` decision on the response score.

Scorers return the probability that a text is toxic. Long texts are split into overlapping word
windows (character windows for languages written without spaces) and a text's score is the
maximum over its windows, so one toxic sentence at the end of a long response is not averaged
away or cut off by a model's input limit.

Prompt and response are scored separately and both scores are stored, but only the response
score decides: a prompt that asks how to "kill a process" must not remove a benign answer.
A scorer may declare the languages it supports (``languages``); rows in other languages are
scored and kept, with ``toxicity_applied = False``.
"""

import hashlib
import importlib.metadata
import logging
import re
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl

from filters.lang import detect_lang, uses_char_shingles
from filters.schema import StageResult, empty_ledger, ledger_rows

log = logging.getLogger(__name__)

_WORD = re.compile(r"\S+")


@runtime_checkable
class ToxicityScorer(Protocol):
    """A model that returns, per text, the probability in [0, 1] that the text is toxic."""

    name: str

    def score(self, texts: list[str]) -> np.ndarray: ...


class ProfanityCheckScorer:
    """alt-profanity-check: a linear SVM over English word n-grams, fast and offline.

    It supports English only. ``languages`` also lists ``und``, the code ``filters.lang`` gives
    Latin-script text with too few English function words, because short or misspelled English
    such as "ur a w0rthless 1d10t" lands there. Words outside its English vocabulary add little
    to the score, so other Latin-script languages tend to score low, which can miss toxic text
    but rarely rejects clean text.
    """

    languages: frozenset[str] = frozenset({"en", "und"})

    def __init__(self) -> None:
        from profanity_check import predict_prob

        self._predict_prob = predict_prob
        self.name = f"alt-profanity-check-{importlib.metadata.version('alt-profanity-check')}"

    def score(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self._predict_prob(texts), dtype=np.float64)


class HFClassifierScorer:
    """A transformers sequence-classification model; the toxic class is found by name in ``id2label``.

    ``model_id_or_path`` is a local directory or a Hugging Face model id. Inputs longer than the
    model's window are truncated, so keep stage-1 chunks below it (roughly 200 English words for a
    512-token model). ``languages=None`` means the model is trusted for every language.
    """

    def __init__(
        self,
        model_id_or_path: str,
        toxic_label: str = "toxic",
        *,
        batch_size: int = 32,
        max_length: int = 512,
        languages: frozenset[str] | None = None,
        device: str = "cpu",
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(model_id_or_path)
        self._model = AutoModelForSequenceClassification.from_pretrained(model_id_or_path).to(device).eval()
        labels = {str(label).lower(): int(index) for index, label in self._model.config.id2label.items()}
        if toxic_label.lower() not in labels:
            raise ValueError(
                f"toxic_label {toxic_label!r} not found in id2label of {model_id_or_path}: "
                f"valid labels are {sorted(labels)}; pass one of them as toxic_label."
            )
        self._toxic_index = labels[toxic_label.lower()]
        # Multi-label heads (toxic, insult, threat, ...) score each label with its own sigmoid.
        # Single-label heads use one softmax over mutually exclusive classes.
        self._multi_label = self._model.config.problem_type == "multi_label_classification"
        self._batch_size = batch_size
        self._max_length = max_length
        self._device = device
        self.languages = languages
        self.name = f"{model_id_or_path}:{toxic_label}"
        log.info("loaded toxicity classifier %s, toxic label index %d", model_id_or_path, self._toxic_index)

    def score(self, texts: list[str]) -> np.ndarray:
        scores = np.zeros(len(texts), dtype=np.float64)
        with self._torch.inference_mode():
            for start in range(0, len(texts), self._batch_size):
                batch = self._tokenizer(
                    texts[start : start + self._batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self._max_length,
                    return_tensors="pt",
                ).to(self._device)
                logits = self._model(**batch).logits.float()
                if self._multi_label:
                    probabilities = self._torch.sigmoid(logits)
                else:
                    probabilities = self._torch.softmax(logits, dim=-1)
                scores[start : start + len(logits)] = probabilities[:, self._toxic_index].cpu().numpy()
        return scores


@dataclass(frozen=True)
class ToxicityConfig:
    """The removal threshold and the chunk windows, in words (characters for spaceless languages)."""

    max_toxicity: float = 0.35
    chunk_tokens: int = 24
    chunk_stride_tokens: int = 12
    batch_chunks: int = 256

    def __post_init__(self) -> None:
        if not 0.0 < self.max_toxicity <= 1.0:
            raise ValueError(
                f"max_toxicity={self.max_toxicity} is invalid: it must be in (0, 1]; rows scoring at or "
                "above it are rejected, so 1.0 rejects only certain toxicity."
            )
        if self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens={self.chunk_tokens} is invalid: it must be at least 1.")
        if not 1 <= self.chunk_stride_tokens <= self.chunk_tokens:
            raise ValueError(
                f"chunk_stride_tokens={self.chunk_stride_tokens} is invalid: it must be in "
                f"[1, chunk_tokens={self.chunk_tokens}], or windows would skip text."
            )
        if self.batch_chunks < 1:
            raise ValueError(f"batch_chunks={self.batch_chunks} is invalid: it must be at least 1.")


def chunk_text(text: str, chunk_tokens: int, stride_tokens: int, char_tokens: bool = False) -> list[str]:
    """Split ``text`` into windows of ``chunk_tokens`` tokens that start every ``stride_tokens`` tokens.

    Tokens are whitespace-separated words, or non-space characters when ``char_tokens``. The last
    window ends at the last token, so every token is in at least one window. A text of at most
    ``chunk_tokens`` tokens is one chunk, unchanged; an empty text is one empty chunk.
    """
    tokens = [char for char in text if not char.isspace()] if char_tokens else _WORD.findall(text)
    if len(tokens) <= chunk_tokens:
        return [text]
    joiner = "" if char_tokens else " "
    starts = list(range(0, len(tokens) - chunk_tokens + 1, stride_tokens))
    if starts[-1] + chunk_tokens < len(tokens):
        starts.append(len(tokens) - chunk_tokens)
    return [joiner.join(tokens[start : start + chunk_tokens]) for start in starts]


def toxicity_cache_key(scorer_name: str, config: ToxicityConfig, char_tokens: bool, text: str) -> str:
    """Hash everything that decides a text's max chunk score: model, windows, tokenization and text."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (scorer_name, str(config.chunk_tokens), str(config.chunk_stride_tokens), str(char_tokens), text):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    return "tox:" + digest.hexdigest()


def _score_texts(
    texts: list[str],
    char_flags: list[bool],
    scorer: ToxicityScorer,
    config: ToxicityConfig,
    cache: MutableMapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str | None], list[str | None]]:
    """Return per text the max chunk score, the chunk count, and an error message and name or None.

    Chunks are scored in batches; a batch that raises is rescored text by text, so one bad
    text becomes one error instead of failing the batch. With a ``cache``, texts scored before
    (same scorer, windows and text) are not scored again, and new scores are added to it.
    """
    keys = [toxicity_cache_key(scorer.name, config, flag, text) for text, flag in zip(texts, char_flags, strict=True)]
    if cache is not None and hasattr(cache, "prefetch"):
        cache.prefetch(keys)
    cached: dict[int, float] = {}
    chunks: list[str] = []
    owners: list[int] = []
    counts = np.zeros(len(texts), dtype=np.int64)
    for index, (text, char_tokens) in enumerate(zip(texts, char_flags, strict=True)):
        parts = chunk_text(text, config.chunk_tokens, config.chunk_stride_tokens, char_tokens)
        counts[index] = len(parts)
        if cache is not None and keys[index] in cache:
            cached[index] = cache[keys[index]]
            continue
        chunks.extend(parts)
        owners.extend([index] * len(parts))
    owner_array = np.asarray(owners, dtype=np.int64)
    chunk_scores = np.full(len(chunks), np.nan)
    errors: list[str | None] = [None] * len(texts)
    error_names: list[str | None] = [None] * len(texts)
    for start in range(0, len(chunks), config.batch_chunks):
        stop = start + config.batch_chunks
        try:
            chunk_scores[start:stop] = scorer.score(chunks[start:stop])
        except Exception:
            log.warning("toxicity batch of chunks %d-%d failed; rescoring text by text", start, stop, exc_info=True)
            for owner in sorted(set(owners[start:stop])):
                positions = np.flatnonzero(owner_array[start:stop] == owner) + start
                try:
                    chunk_scores[positions] = scorer.score([chunks[p] for p in positions])
                except Exception as error:
                    errors[owner] = f"{type(error).__name__}: {error}"[:500]
                    error_names[owner] = type(error).__name__
    max_scores = np.full(len(texts), np.nan)
    if chunks:
        valid = ~np.isnan(chunk_scores)
        np.fmax.at(max_scores, owner_array[valid], np.clip(chunk_scores[valid], 0.0, 1.0))
    if cache is not None:
        for index in set(owners):
            if errors[index] is None and not np.isnan(max_scores[index]):
                cache[keys[index]] = float(max_scores[index])
        for index, score in cached.items():
            max_scores[index] = score
    return max_scores, counts, errors, error_names


def _languages(samples: pl.DataFrame) -> list[str]:
    return [
        lang if lang else detect_lang(response or "")
        for lang, response in zip(samples["lang"], samples["response"], strict=True)
    ]


def apply_toxicity(
    samples: pl.DataFrame,
    scorer: ToxicityScorer,
    config: ToxicityConfig,
    *,
    stage: str = "stage1",
    cache: MutableMapping[str, float] | None = None,
) -> StageResult:
    """Score prompts and responses, and reject rows whose response score is at least ``max_toxicity``.

    Adds to kept rows: ``toxicity_score`` (max over response chunks), ``toxicity_prompt_score``,
    ``toxicity_model`` (the scorer's name), ``toxicity_chunks`` (Int32, response chunks scored)
    and ``toxicity_applied`` (False when the row's language is outside ``scorer.languages``, so
    the score did not decide). The row's ``lang`` is used, or ``detect_lang`` of the response
    when it is null. A scorer exception on a row rejects it as ``error_<ExceptionName>``.
    """
    prompts = [prompt or "" for prompt in samples["prompt"]]
    responses = [response or "" for response in samples["response"]]
    langs = _languages(samples)
    response_char = [uses_char_shingles(lang, text) for lang, text in zip(langs, responses, strict=True)]
    prompt_char = [uses_char_shingles(lang, text) for lang, text in zip(langs, prompts, strict=True)]

    response_scores, response_chunks, response_errors, response_names = _score_texts(
        responses, response_char, scorer, config, cache
    )
    prompt_scores, _, prompt_errors, prompt_names = _score_texts(prompts, prompt_char, scorer, config, cache)
    supported = getattr(scorer, "languages", None)
    applied = [supported is None or lang in supported for lang in langs]
    errors = [r or (f"prompt: {p}" if p else None) for r, p in zip(response_errors, prompt_errors, strict=True)]
    reasons = [f"error_{r or p}" if (r or p) else None for r, p in zip(response_names, prompt_names, strict=True)]

    scored = samples.with_columns(
        pl.Series("toxicity_score", response_scores, dtype=pl.Float64).fill_nan(None),
        pl.Series("toxicity_prompt_score", prompt_scores, dtype=pl.Float64).fill_nan(None),
        pl.lit(scorer.name, dtype=pl.String).alias("toxicity_model"),
        pl.Series("toxicity_chunks", response_chunks, dtype=pl.Int32),
        pl.Series("toxicity_applied", applied, dtype=pl.Boolean),
        pl.Series("_error", errors, dtype=pl.String),
        pl.Series("_reason", reasons, dtype=pl.String),
    )
    failed = pl.col("_error").is_not_null()
    toxic = ~failed & pl.col("toxicity_applied") & (pl.col("toxicity_score") >= config.max_toxicity)

    error_rows = scored.filter(failed)
    toxic_rows = scored.filter(toxic)
    parts = []
    if error_rows.height:
        parts.append(
            ledger_rows(
                error_rows, stage=stage, filter_name="toxicity", reason=pl.col("_reason"),
                detail=pl.col("_error"),
            )
        )
    if toxic_rows.height:
        parts.append(
            ledger_rows(
                toxic_rows,
                stage=stage,
                filter_name="toxicity",
                reason="toxic",
                score=pl.col("toxicity_score"),
                threshold=config.max_toxicity,
                detail=pl.format(
                    "model {}, max over {} response chunks; prompt score {}",
                    pl.col("toxicity_model"),
                    pl.col("toxicity_chunks"),
                    pl.col("toxicity_prompt_score").round(3),
                ),
            )
        )
    rejected = pl.concat(parts) if parts else empty_ledger()
    kept = scored.filter(~failed & ~toxic).drop("_error", "_reason")
    not_applied = applied.count(False)
    result = StageResult(kept=kept, rejected=rejected, rows_in=samples.height)
    log.info(
        "toxicity (%s): %d in, %d kept, %d response chunks, %d rows outside the scorer's languages, rejected %s",
        scorer.name, samples.height, kept.height, int(response_chunks.sum()), not_applied, result.reason_counts(),
    )
    return result
