"""NLI scoring for stage 2: the scorer interface, the cross-encoder backend and a score cache.
Which sentence pairs are scored is planned in ``filters.nli_pairs``.

A scorer maps (premise, hypothesis) pairs to P(contradiction). The label index is read from the
checkpoint's ``config.id2label``, because NLI checkpoints disagree on label order (for example
contradiction/entailment/neutral versus contradiction/neutral/entailment). A checkpoint without
that mapping is rejected instead of guessed.
"""

import hashlib
import logging
import time
from collections.abc import MutableMapping
from typing import Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

# Offline default: the shared checkpoint, relative to the repository root. Resolving it is the
# caller's job because a library cannot know the working directory.
OFFLINE_NLI_MODEL = "../shared/models/nli-minilm-l6"
# Public checkpoint for users with network access (contradiction/entailment/neutral order).
HUB_NLI_MODEL = "cross-encoder/nli-deberta-v3-xsmall"


@runtime_checkable
class NliScorer(Protocol):
    """Anything that scores P(contradiction) for premise/hypothesis pairs."""

    name: str
    max_length: int  # tokens per pair, special tokens included

    def count_tokens(self, premise: str, hypothesis: str) -> int:
        """Return the number of tokens the pair occupies, special tokens included, untruncated."""
        ...

    def contradiction_probs(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """Return P(contradiction) per pair as float64 of shape (len(pairs),)."""
        ...


def find_label_index(id2label: dict | None, label: str) -> int:
    """Return the class index whose name is ``label`` (case-insensitive) in ``id2label``.

    Raises ValueError when the mapping is missing or has no such label.
    """
    if not id2label:
        raise ValueError(
            "the NLI checkpoint has no config.id2label, so the contradiction class cannot be located; "
            "add id2label (e.g. {0: 'contradiction', 1: 'entailment', 2: 'neutral'}) to its config.json"
        )
    matches = [int(index) for index, name in id2label.items() if str(name).strip().lower() == label]
    if len(matches) != 1:
        names = sorted(str(name) for name in id2label.values())
        raise ValueError(
            f"the NLI checkpoint's config.id2label must name exactly one {label!r} class, got labels {names}; "
            "use an NLI checkpoint or fix the labels in its config.json"
        )
    return matches[0]


class CrossEncoderNli:
    """A sentence-transformers ``CrossEncoder`` NLI checkpoint, loaded from a local path or a hub id.

    Pairs longer than ``max_length`` tokens are never passed to the model: the model would
    silently truncate them, so ``contradiction_probs`` raises instead. Split them first.
    """

    def __init__(self, name_or_path: str, batch_size: int = 64, device: str = "cpu"):
        from sentence_transformers import CrossEncoder

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        started = time.perf_counter()
        self.name = name_or_path
        self.batch_size = batch_size
        self._model = CrossEncoder(name_or_path, device=device)
        config = self._model.model.config
        id2label = getattr(config, "id2label", None)
        # transformers fills a missing id2label with LABEL_0..LABEL_n, which names no NLI class.
        self.contradiction_index = find_label_index(id2label, "contradiction")
        try:
            self.entailment_index: int | None = find_label_index(id2label, "entailment")
        except ValueError:
            self.entailment_index = None
        self.max_length = int(self._model.max_length or self._model.tokenizer.model_max_length)
        log.info(
            "loaded NLI cross-encoder %s in %.1f s: contradiction index %d, max %d tokens per pair",
            name_or_path,
            time.perf_counter() - started,
            self.contradiction_index,
            self.max_length,
        )

    def count_tokens(self, premise: str, hypothesis: str) -> int:
        encoded = self._model.tokenizer(premise, hypothesis, truncation=False, add_special_tokens=True)
        return len(encoded["input_ids"])

    def class_probs(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """Return softmax probabilities of shape (len(pairs), num_labels) in the checkpoint's label order.

        Pairs are sorted by length so each batch pads to similar lengths, then put back in input order.
        """
        num_labels = len(self._model.model.config.id2label)
        if not pairs:
            return np.zeros((0, num_labels), dtype=np.float64)
        lengths = [self.count_tokens(premise, hypothesis) for premise, hypothesis in pairs]
        too_long = [i for i, length in enumerate(lengths) if length > self.max_length]
        if too_long:
            first = too_long[0]
            raise ValueError(
                f"{len(too_long)} pairs exceed the model window of {self.max_length} tokens "
                f"(pair {first} has {lengths[first]}); split them before scoring so nothing is truncated"
            )
        order = np.argsort(lengths, kind="stable")
        probs = np.empty((len(pairs), num_labels), dtype=np.float64)
        for begin in range(0, len(pairs), self.batch_size):
            batch_rows = order[begin : begin + self.batch_size]
            batch = [pairs[i] for i in batch_rows]
            scores = self._model.predict(
                batch, batch_size=len(batch), apply_softmax=True, convert_to_numpy=True, show_progress_bar=False
            )
            probs[batch_rows] = np.asarray(scores, dtype=np.float64).reshape(len(batch), num_labels)
        return probs

    def contradiction_probs(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        return self.class_probs(pairs)[:, self.contradiction_index]


def pair_cache_key(model_name: str, premise: str, hypothesis: str) -> str:
    """Return the cache key of one directed pair: blake2b over the model name and both texts."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (model_name, premise, hypothesis):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x1f")
    return digest.hexdigest()


def score_with_cache(
    nli: NliScorer,
    pairs: list[tuple[str, str]],
    cache: MutableMapping[str, float] | None = None,
) -> tuple[np.ndarray, int]:
    """Score directed pairs, reusing cached P(contradiction) values.

    Each distinct uncached pair is scored once, and new scores are written back to ``cache``.
    Returns the probabilities in input order and the number of pairs the model scored.
    """
    keys = [pair_cache_key(nli.name, premise, hypothesis) for premise, hypothesis in pairs]
    known: dict[str, float] = {}
    if cache is not None:
        for key in set(keys):
            value = cache.get(key)
            if value is not None:
                known[key] = float(value)
    todo: dict[str, tuple[str, str]] = {}
    for key, pair in zip(keys, pairs):
        if key not in known and key not in todo:
            todo[key] = pair
    if todo:
        new_scores = np.asarray(nli.contradiction_probs(list(todo.values())), dtype=np.float64)
        for key, score in zip(todo, new_scores):
            known[key] = float(score)
            if cache is not None:
                cache[key] = float(score)
    return np.array([known[key] for key in keys], dtype=np.float64), len(todo)
