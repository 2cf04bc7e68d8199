"""Per-task evaluation of a causal LM: response-token loss on every row, scored generation on a few.

The result has one row per task and feeds the next round's mixture weights (see ``task_signals``).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
import torch

from trainer.data import IGNORE_INDEX, encode_pair, fit_to_length
from trainer.mixing import TaskSignal
from trainer.train import collate, peak_rss_mb

log = logging.getLogger(__name__)

EVAL_RESULT_SCHEMA: dict[str, pl.DataType] = {
    "task": pl.String,
    "n_eval": pl.Int64,  # rows with at least one response token scored
    "mean_loss": pl.Float64,  # token-weighted mean response-token cross-entropy, nats; null when n_eval == 0
    "accuracy": pl.Float64,  # share of generations the scorer accepted; null without a scorer
    "accuracy_kind": pl.String,  # what the scorer checks, e.g. "exact_match"; null without a scorer
    "n_generated": pl.Int64,
    "n_scorer_errors": pl.Int64,  # generations whose scorer raised; counted as not accepted
    "latency_ms_per_sample": pl.Float64,  # wall time of the loss forward pass per row
    "generate_ms_per_sample": pl.Float64,  # wall time of greedy generation per generated row; null if none
    "peak_rss_mb": pl.Float64,  # peak resident memory of the process after this task
}

Scorer = Callable[[str, dict], bool]


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation.

    batch_size: rows per forward pass, >= 1.
    max_seq_len: maximum tokens per scored row, >= 2. Longer rows are cut as in training.
    max_generate_per_task: rows per task (first by item_id) that get a greedy generation when the task
        has a scorer, >= 0.
    max_new_tokens: maximum tokens per generation, >= 1.
    """

    batch_size: int = 8
    max_seq_len: int = 512
    max_generate_per_task: int = 32
    max_new_tokens: int = 128

    def __post_init__(self) -> None:
        for name, minimum in (("batch_size", 1), ("max_seq_len", 2), ("max_generate_per_task", 0), ("max_new_tokens", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"EvalConfig.{name}={value!r} is invalid; it must be an int >= {minimum}")
        if self.max_new_tokens >= self.max_seq_len:
            raise ValueError(
                f"EvalConfig.max_new_tokens={self.max_new_tokens} must be smaller than max_seq_len={self.max_seq_len}, "
                "because the prompt and the generation share the sequence"
            )


def evaluate(
    model,
    tokenizer,
    eval_rows: pl.DataFrame,
    config: EvalConfig = EvalConfig(),
    scorers: dict[str, Scorer] | None = None,
    accuracy_kinds: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Evaluate ``model`` per task and return one row per task with ``EVAL_RESULT_SCHEMA`` columns.

    eval_rows needs ``task``, ``prompt`` and ``response``. The columns ``reference``, ``tests``,
    ``entry_point`` and ``item_id`` are passed to scorers when present.
    scorers: task -> callable(generated_text, row_dict) -> bool. A task with a scorer gets greedy
        generations on its first ``max_generate_per_task`` rows, ordered by ``item_id`` (input order
        when there is no ``item_id``). An exception in a scorer counts as a rejection and is counted in
        ``n_scorer_errors``.
    accuracy_kinds: task -> label for ``accuracy_kind``. A task with a scorer but no label gets "custom".
    """
    missing = {"task", "prompt", "response"} - set(eval_rows.columns)
    if missing:
        raise ValueError(f"eval_rows is missing columns {sorted(missing)}; it needs task, prompt and response")
    scorers = scorers or {}
    accuracy_kinds = accuracy_kinds or {}
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    was_training = model.training
    model.eval()
    results = []
    try:
        for task in sorted(eval_rows["task"].drop_nulls().unique().to_list()):
            rows = _ordered(eval_rows.filter(pl.col("task") == task))
            result = {"task": task} | _score_loss(model, tokenizer, rows, config, pad_token_id)
            result |= _score_generations(model, tokenizer, rows, config, pad_token_id, scorers.get(task))
            if result["accuracy"] is not None:
                result["accuracy_kind"] = accuracy_kinds.get(task, "custom")
            result["peak_rss_mb"] = peak_rss_mb()
            results.append(result)
            log.info(
                "evaluated %s: n_eval %d, mean_loss %s, accuracy %s (%d generated)",
                task,
                result["n_eval"],
                _round(result["mean_loss"]),
                _round(result["accuracy"]),
                result["n_generated"],
            )
    finally:
        model.train(was_training)

    skipped_null = eval_rows["task"].null_count()
    if skipped_null:
        log.warning("skipped %d eval rows without a task", skipped_null)
    return pl.DataFrame(results, schema=EVAL_RESULT_SCHEMA)


def _round(value: float | None) -> str:
    return "null" if value is None else f"{value:.4f}"


def _ordered(rows: pl.DataFrame) -> pl.DataFrame:
    if "item_id" in rows.columns:
        return rows.sort("item_id", maintain_order=True, nulls_last=True)
    return rows


@torch.no_grad()
def _score_loss(model, tokenizer, rows: pl.DataFrame, config: EvalConfig, pad_token_id: int) -> dict:
    """Sum response-token cross-entropy over all rows of one task and return the token-weighted mean."""
    examples = []
    for prompt, response in zip(rows["prompt"].to_list(), rows["response"].to_list()):
        prompt_ids, response_ids = encode_pair(prompt or "", response or "", tokenizer)
        prompt_ids, response_ids, _ = fit_to_length(prompt_ids, response_ids, config.max_seq_len)
        if response_ids and prompt_ids:
            examples.append({"input_ids": prompt_ids + response_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids})

    total_loss = 0.0
    total_tokens = 0
    started = time.perf_counter()
    for start in range(0, len(examples), config.batch_size):
        batch = collate(examples[start : start + config.batch_size], pad_token_id, config.max_seq_len)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = batch["labels"][:, 1:]
        total_loss += float(
            torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                targets.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
        )
        total_tokens += int((targets != IGNORE_INDEX).sum())
    seconds = time.perf_counter() - started

    return {
        "n_eval": len(examples),
        "mean_loss": total_loss / total_tokens if total_tokens else None,
        "latency_ms_per_sample": 1000.0 * seconds / len(examples) if examples else None,
    }


@torch.no_grad()
def _score_generations(model, tokenizer, rows, config: EvalConfig, pad_token_id: int, scorer: Scorer | None) -> dict:
    """Generate greedily for the first rows of a task and return the share the scorer accepts."""
    empty = {"accuracy": None, "accuracy_kind": None, "n_generated": 0, "n_scorer_errors": 0, "generate_ms_per_sample": None}
    if scorer is None or config.max_generate_per_task == 0 or rows.height == 0:
        return empty

    chosen = rows.head(config.max_generate_per_task)
    records = chosen.to_dicts()
    started = time.perf_counter()
    texts = []
    for start in range(0, len(records), config.batch_size):
        batch = records[start : start + config.batch_size]
        texts.extend(_generate(model, tokenizer, [record["prompt"] or "" for record in batch], config, pad_token_id))
    seconds = time.perf_counter() - started

    accepted = 0
    errors = 0
    first_error = None
    for text, record in zip(texts, records):
        try:
            accepted += bool(scorer(text, record))
        except Exception as error:  # noqa: BLE001 - a scorer bug on one row must not end the evaluation
            errors += 1
            first_error = first_error or f"{type(error).__name__}: {error} (item_id {record.get('item_id')})"
    if errors:
        log.warning("scorer for task %s raised on %d of %d rows; first: %s", records[0]["task"], errors, len(records), first_error)

    return {
        "accuracy": accepted / len(records),
        "accuracy_kind": None,
        "n_generated": len(records),
        "n_scorer_errors": errors,
        "generate_ms_per_sample": 1000.0 * seconds / len(records),
    }


def _generate(model, tokenizer, prompts: list[str], config: EvalConfig, pad_token_id: int) -> list[str]:
    """Greedy-decode a batch of prompts, left-padded, and return the decoded new text of each."""
    budget = config.max_seq_len - config.max_new_tokens
    encoded = []
    for prompt in prompts:
        prompt_ids, _ = encode_pair(prompt, "", tokenizer)
        encoded.append(prompt_ids[-budget:])
    length = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, length - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, length - len(ids) :] = 1

    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=config.max_new_tokens,
        do_sample=False,
        pad_token_id=pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.batch_decode(output[:, length:], skip_special_tokens=True)


def task_signals(results: pl.DataFrame) -> dict[str, TaskSignal]:
    """Convert the frame ``evaluate`` returns into the feedback that ``mixing.compute_weights`` reads."""
    return {
        row["task"]: TaskSignal(n_eval=int(row["n_eval"]), mean_loss=row["mean_loss"], accuracy=row["accuracy"])
        for row in results.iter_rows(named=True)
    }
