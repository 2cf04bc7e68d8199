"""Draw the training mixture from selected samples and turn rows into token ids with response-only labels."""

import hashlib
import logging
import math
import zlib
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import polars as pl

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value that torch's cross_entropy skips
PLAIN_PROMPT_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


@dataclass(frozen=True)
class MixturePlan:
    """How many rows each task contributes to one mixture.

    requested: task -> rows the weights ask for (largest-remainder rounding of total * weight).
    drawn: task -> rows actually drawn. Smaller than requested only for capped tasks.
    available: task -> distinct rows the task has.
    capped: tasks whose request needed more than max_repeats passes over their rows.
    """

    requested: dict[str, int]
    drawn: dict[str, int]
    available: dict[str, int]
    capped: list[str] = field(default_factory=list)

    @property
    def total_drawn(self) -> int:
        return sum(self.drawn.values())


def plan_mixture(
    available: dict[str, int], weights: dict[str, float], total: int, max_repeats: int = 3
) -> MixturePlan:
    """Split ``total`` rows over tasks in proportion to ``weights``.

    Weights are renormalized over the tasks that have rows, so a task with rows but no weight, or with
    weight but no rows, gets 0 rows. Counts use largest-remainder rounding and sum to ``total``, ties
    broken by task name. A task may repeat its rows at most ``max_repeats`` times in all. A request
    above that is capped and listed in ``capped``, and the missing rows are not moved to other tasks,
    because that would change the mixture the weights describe.
    """
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValueError(f"total={total!r} is invalid; use the number of rows to draw, an int >= 0")
    if isinstance(max_repeats, bool) or not isinstance(max_repeats, int) or max_repeats < 1:
        raise ValueError(f"max_repeats={max_repeats!r} is invalid; use an int >= 1 (1 means no repeats)")
    for task, weight in weights.items():
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weights[{task!r}]={weight!r} is invalid; weights must be finite and >= 0")

    eligible = sorted(task for task, weight in weights.items() if weight > 0 and available.get(task, 0) > 0)
    skipped = sorted(task for task, weight in weights.items() if weight > 0 and available.get(task, 0) == 0)
    if skipped:
        log.warning("tasks %s have weight but no rows; their weight goes to the other tasks", skipped)
    if total > 0 and not eligible:
        raise ValueError(
            f"no task has both weight > 0 and rows (weights={weights}, rows={available}); cannot draw {total} rows"
        )

    requested = _largest_remainder({task: weights[task] for task in eligible}, total)
    drawn: dict[str, int] = {}
    capped: list[str] = []
    for task, count in requested.items():
        limit = available[task] * max_repeats
        if count > limit:
            capped.append(task)
            drawn[task] = limit
        else:
            drawn[task] = count
    if capped:
        log.warning(
            "capped %s at max_repeats=%d passes over their rows: requested %s, drew %s",
            capped,
            max_repeats,
            {task: requested[task] for task in capped},
            {task: drawn[task] for task in capped},
        )
    return MixturePlan(
        requested=requested, drawn=drawn, available={task: available.get(task, 0) for task in weights}, capped=capped
    )


def _largest_remainder(weights: dict[str, float], total: int) -> dict[str, int]:
    weight_sum = sum(weights.values())
    if not weights or total == 0:
        return {task: 0 for task in weights}
    quotas = {task: total * weight / weight_sum for task, weight in weights.items()}
    counts = {task: math.floor(quota) for task, quota in quotas.items()}
    shortfall = total - sum(counts.values())
    by_remainder = sorted(weights, key=lambda task: (-(quotas[task] - counts[task]), task))
    for task in by_remainder[:shortfall]:
        counts[task] += 1
    return counts


def sample_mixture(
    samples: pl.DataFrame, weights: dict[str, float], total: int, seed: int, max_repeats: int = 3
) -> pl.DataFrame:
    """Draw ``total`` rows from ``samples`` with per-task shares given by ``weights``.

    Each task's rows are drawn without replacement first. When a task's share exceeds its rows, it
    takes full passes over its rows in a new random order each time, up to ``max_repeats`` passes (see
    ``plan_mixture`` for capping). Rows are sorted by ``sample_id`` (when present) before drawing, so
    the result depends only on the rows, the weights and ``seed``, not on the input order. Each task
    draws from its own random stream, derived from ``seed`` and the task name, so adding a task does
    not change what the others draw.

    Returns the drawn rows with all input columns, shuffled, plus ``mixture_position`` (0..n-1, Int64).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} is invalid; use an int >= 0")
    if "task" not in samples.columns:
        raise ValueError(f"samples has no 'task' column (columns: {samples.columns}); add the task label first")
    ordered = samples.sort("sample_id", maintain_order=True) if "sample_id" in samples.columns else samples
    counts = ordered.group_by("task").len()
    available = {task: int(n) for task, n in counts.iter_rows() if task is not None}
    plan = plan_mixture(available, weights, total, max_repeats)

    parts = []
    for task in sorted(plan.drawn):
        count = plan.drawn[task]
        if count == 0:
            continue
        rows = ordered.filter(pl.col("task") == task)
        generator = np.random.default_rng([seed, zlib.crc32(task.encode("utf-8"))])
        indices = _draw_indices(rows.height, count, generator)
        parts.append(rows[indices])

    if not parts:
        return ordered.clear().with_columns(mixture_position=pl.lit(None, dtype=pl.Int64))
    mixture = pl.concat(parts, how="vertical")
    order = np.random.default_rng(seed).permutation(mixture.height)
    mixture = mixture[order].with_columns(mixture_position=pl.int_range(pl.len(), dtype=pl.Int64))
    log.info(
        "drew %d rows from %d tasks (requested %d, seed %d): %s",
        mixture.height,
        len(parts),
        total,
        seed,
        plan.drawn,
    )
    return mixture


def sample_ids_sha256(sample_ids: list[str]) -> str:
    """Hash a mixture's sample ids, sorted and newline-joined, so that the same draw gives the same hash.

    Repeated ids count once per occurrence, so a mixture that repeats a sample hashes differently from
    one that does not.
    """
    return hashlib.sha256("\n".join(sorted(sample_ids)).encode("utf-8")).hexdigest()


def _draw_indices(available: int, count: int, generator: np.random.Generator) -> np.ndarray:
    """Concatenate random permutations of range(available) and keep the first ``count`` indices."""
    passes = math.ceil(count / available)
    permutations = [generator.permutation(available) for _ in range(passes)]
    return np.concatenate(permutations)[:count]


class ChatText(NamedTuple):
    """One sample rendered as text: the prompt part (no loss) and the response part (loss)."""

    prompt: str
    response: str


def format_chat(prompt: str, response: str, tokenizer) -> ChatText:
    """Render a sample with the tokenizer's chat template, or with a plain template if it has none.

    With a chat template, the prompt part is the user turn plus the generation prompt, and the response
    part is the rest of the rendered conversation (the assistant text and its end-of-turn tokens). The
    plain template is "### Instruction:" / "### Response:", preceded by the bos token and followed by
    the eos token when the tokenizer defines them.
    """
    if getattr(tokenizer, "chat_template", None):
        user = [{"role": "user", "content": prompt}]
        prompt_text = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full_text = tokenizer.apply_chat_template(
            user + [{"role": "assistant", "content": response}], tokenize=False
        )
        if full_text.startswith(prompt_text):
            return ChatText(prompt_text, full_text[len(prompt_text) :])
        # NOTE: some templates render the assistant turn differently from the generation prompt.
        # Then the response part is the raw response plus eos, appended to the generation prompt.
        return ChatText(prompt_text, response + (tokenizer.eos_token or ""))

    prefix = tokenizer.bos_token or ""
    return ChatText(prefix + PLAIN_PROMPT_TEMPLATE.format(prompt=prompt), response + (tokenizer.eos_token or ""))


def encode_pair(prompt: str, response: str, tokenizer) -> tuple[list[int], list[int]]:
    """Tokenize one sample and return the ids of its prompt part and of its response part.

    The two parts are tokenized separately, so no token spans the boundary and the label mask is exact.
    """
    text = format_chat(prompt, response, tokenizer)
    prompt_ids = tokenizer(text.prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(text.response, add_special_tokens=False)["input_ids"]
    return list(prompt_ids), list(response_ids)


def fit_to_length(prompt_ids: list[int], response_ids: list[int], max_len: int) -> tuple[list[int], list[int], bool]:
    """Truncate a prompt/response pair to at most ``max_len`` tokens and report whether it was cut.

    The prompt keeps its last tokens (those next to the response), and the response keeps its first
    tokens. The prompt gives up tokens first but keeps at least max_len // 2 of them when it is that
    long, so that a long response cannot crowd out the whole prompt.
    """
    if len(prompt_ids) + len(response_ids) <= max_len:
        return prompt_ids, response_ids, False
    keep_prompt = min(len(prompt_ids), max(max_len - len(response_ids), max_len // 2))
    keep_response = max_len - keep_prompt
    kept_prompt = prompt_ids[len(prompt_ids) - keep_prompt :] if keep_prompt else []
    return kept_prompt, response_ids[:keep_response], True


def build_examples(rows: pl.DataFrame, tokenizer, max_len: int) -> list[dict]:
    """Tokenize rows with ``prompt`` and ``response`` columns into training examples.

    Each example has ``input_ids``, ``labels`` (IGNORE_INDEX on prompt tokens, so the loss covers
    response tokens only), ``truncated`` (bool) and, when ``rows`` has the column, ``task``.
    Sequences longer than ``max_len`` are cut by ``fit_to_length``. A row whose response has no tokens
    is dropped, because it would contribute no loss. Both counts are logged.
    """
    if max_len < 2:
        raise ValueError(f"max_len={max_len} is too small; use at least 2 tokens (typically 256-2048)")
    missing = {"prompt", "response"} - set(rows.columns)
    if missing:
        raise ValueError(f"rows is missing columns {sorted(missing)}; build_examples needs prompt and response")

    tasks = rows["task"].to_list() if "task" in rows.columns else [None] * rows.height
    examples: list[dict] = []
    truncated = 0
    dropped = 0
    for prompt, response, task in zip(rows["prompt"].to_list(), rows["response"].to_list(), tasks):
        prompt_ids, response_ids = encode_pair(prompt or "", response or "", tokenizer)
        if not response_ids:
            dropped += 1
            continue
        prompt_ids, response_ids, was_cut = fit_to_length(prompt_ids, response_ids, max_len)
        truncated += was_cut
        example = {
            "input_ids": prompt_ids + response_ids,
            "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids,
            "truncated": was_cut,
        }
        if task is not None:
            example["task"] = task
        examples.append(example)

    if truncated or dropped:
        log.warning(
            "built %d examples from %d rows: %d truncated to max_len=%d, %d dropped for an empty response",
            len(examples),
            rows.height,
            truncated,
            max_len,
            dropped,
        )
    else:
        log.info("built %d examples from %d rows, none truncated (max_len=%d)", len(examples), rows.height, max_len)
    return examples
