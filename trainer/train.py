"""Supervised fine-tuning loop for a causal LM on CPU: AdamW, linear warmup and decay, per-batch padding.

The loop is plain torch, so every step is visible: shuffle with a seeded generator, pad each batch to
its longest example, compute the mean cross-entropy over response tokens, clip gradients, step.
"""

import logging
import math
import os
import resource
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.data import IGNORE_INDEX
from trainer.models import replace_directory

log = logging.getLogger(__name__)

# Two threads unless configured, so that one training run does not take every core of a shared machine.
DEFAULT_NUM_THREADS = 2


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one fine-tuning run.

    max_steps: optimizer steps, >= 1. The loop passes over the examples as many times as needed.
    batch_size: sequences per step, >= 1.
    learning_rate: peak AdamW learning rate, in (0, 1]. The default 5e-5 is also the default of the
        transformers Trainer.
    warmup_steps: steps of linear warmup from 0 to learning_rate, in [0, max_steps]. The rate then
        decays linearly to 0 at max_steps.
    max_seq_len: maximum tokens per sequence, >= 2. Longer examples are cut at the end, and the count
        is logged.
    seed: seed for the shuffling order and for torch's random state during the run.
    grad_clip: maximum global gradient L2 norm, > 0, or 0 to disable clipping.
    log_every: steps between progress reports, >= 1. The last step always reports.
    num_threads: torch CPU threads during the run. None uses OMP_NUM_THREADS when it is set and
        DEFAULT_NUM_THREADS (2) otherwise. The previous setting is restored afterwards.
    """

    max_steps: int = 60
    batch_size: int = 4
    learning_rate: float = 5e-5
    warmup_steps: int = 5
    max_seq_len: int = 512
    seed: int = 0
    grad_clip: float = 1.0
    log_every: int = 10
    num_threads: int | None = None

    def __post_init__(self) -> None:
        _require_int("max_steps", self.max_steps, 1, "use the number of optimizer steps, e.g. 60")
        _require_int("batch_size", self.batch_size, 1, "use e.g. 4")
        _require_int("warmup_steps", self.warmup_steps, 0, "use 0 for no warmup")
        if self.warmup_steps > self.max_steps:
            raise ValueError(
                f"TrainConfig.warmup_steps={self.warmup_steps} exceeds max_steps={self.max_steps}; "
                "use warmup_steps <= max_steps"
            )
        _require_int("max_seq_len", self.max_seq_len, 2, "use e.g. 256-2048 tokens")
        _require_int("seed", self.seed, 0, "use any int >= 0")
        _require_int("log_every", self.log_every, 1, "use e.g. 10")
        if self.num_threads is not None:
            _require_int("num_threads", self.num_threads, 1, "use None for the default, or a thread count")
        if not isinstance(self.learning_rate, (int, float)) or not (0 < self.learning_rate <= 1):
            raise ValueError(
                f"TrainConfig.learning_rate={self.learning_rate!r} is outside (0, 1]; use e.g. 5e-5 for fine-tuning"
            )
        if not isinstance(self.grad_clip, (int, float)) or not math.isfinite(self.grad_clip) or self.grad_clip < 0:
            raise ValueError(f"TrainConfig.grad_clip={self.grad_clip!r} is invalid; use 0 (off) or a norm such as 1.0")


def _require_int(name: str, value: int, minimum: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"TrainConfig.{name}={value!r} is invalid; it must be an int >= {minimum} ({hint})")


@dataclass(frozen=True)
class TrainReport:
    """Counts and timings of one run.

    steps: optimizer steps taken. examples_seen: sequences processed, repeats included.
    tokens_seen: non-padding tokens processed (prompt and response).
    final_loss: loss of the last step. mean_loss: mean of the per-step losses.
    seconds: wall time of the loop. peak_rss_mb: peak resident memory of the whole process so far
        (getrusage ru_maxrss), not of this call alone.
    losses: mean response-token cross-entropy of each step, in nats.
    """

    steps: int
    examples_seen: int
    tokens_seen: int
    final_loss: float
    mean_loss: float
    seconds: float
    peak_rss_mb: float
    losses: list[float] = field(default_factory=list)


def peak_rss_mb() -> float:
    """Return the peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def collate(examples: list[dict], pad_token_id: int, max_seq_len: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example (at most ``max_seq_len``) and build the attention mask."""
    length = min(max_seq_len, max(len(example["input_ids"]) for example in examples))
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        ids = example["input_ids"][:length]
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[row, : len(ids)] = torch.tensor(example["labels"][:length], dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def _usable_examples(examples: list[dict], max_seq_len: int) -> list[dict]:
    """Drop examples that would have no response token within ``max_seq_len``, and log the counts."""
    usable = []
    too_long = 0
    for example in examples:
        labels = example["labels"][:max_seq_len]
        if len(example["input_ids"]) > max_seq_len:
            too_long += 1
        # Position 0 is never predicted, because the model predicts token t from tokens before t.
        if any(label != IGNORE_INDEX for label in labels[1:]):
            usable.append(example)
    if too_long:
        log.warning("%d of %d examples are longer than max_seq_len=%d and are cut", too_long, len(examples), max_seq_len)
    if len(usable) < len(examples):
        log.warning("dropped %d examples without a response token inside max_seq_len", len(examples) - len(usable))
    if not usable:
        raise ValueError(f"none of the {len(examples)} examples has a response token inside max_seq_len={max_seq_len}")
    return usable


def _batches(count: int, batch_size: int, generator: torch.Generator):
    """Yield batches of example indices without end. Each epoch is a new seeded permutation."""
    while True:
        order = torch.randperm(count, generator=generator).tolist()
        for start in range(0, count, batch_size):
            yield order[start : start + batch_size]


def _lr_factor(step: int, warmup_steps: int, max_steps: int) -> float:
    """Return the learning-rate multiplier for the 0-based ``step``.

    The multiplier rises linearly during warmup, reaches 1 at ``warmup_steps`` and then falls linearly
    toward 0 at ``max_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    remaining = max_steps - step
    return remaining / max(1, max_steps - warmup_steps)


def _resolve_threads(config: TrainConfig) -> int | None:
    if config.num_threads is not None:
        return config.num_threads
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return DEFAULT_NUM_THREADS


def train(
    model,
    tokenizer,
    examples: list[dict],
    config: TrainConfig = TrainConfig(),
    progress: Callable[[dict], None] | None = None,
) -> TrainReport:
    """Fine-tune ``model`` in place on ``examples`` (from ``build_examples``) and return a report.

    Every ``log_every`` steps, and at the last step, one line is logged
    (``step 20/60 | loss 2.31 | lr 4.2e-05 | tok/s 1.2k | seq/s 3.1``) and ``progress`` is called
    with a dict of the same values: step, max_steps, loss (mean over the interval), lr,
    tokens_per_second, sequences_per_second, elapsed_seconds.

    Runs on CPU and is deterministic for a seed: the same model, examples and config give the same
    losses. Raises ValueError when no example has a response token.
    """
    if not examples:
        raise ValueError("examples is empty; build them with trainer.data.build_examples first")
    usable = _usable_examples(examples, config.max_seq_len)
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_token_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an eos token; set tokenizer.pad_token")

    threads_before = torch.get_num_threads()
    threads = _resolve_threads(config)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return _run_loop(model, usable, pad_token_id, config, progress)
    finally:
        torch.set_num_threads(threads_before)


def _run_loop(model, examples, pad_token_id, config, progress) -> TrainReport:
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, config.warmup_steps, config.max_steps)
    )
    batches = _batches(len(examples), config.batch_size, generator)
    log.info(
        "training %d steps, batch %d, lr %.1e, on %d examples with %d threads",
        config.max_steps,
        config.batch_size,
        config.learning_rate,
        len(examples),
        torch.get_num_threads(),
    )

    model.train()
    losses: list[float] = []
    examples_seen = 0
    tokens_seen = 0
    started = time.perf_counter()
    interval_start, interval_tokens, interval_sequences = started, 0, 0
    for step in range(config.max_steps):
        batch = collate([examples[i] for i in next(batches)], pad_token_id, config.max_seq_len)
        lr = optimizer.param_groups[0]["lr"]
        output = model(**batch)
        output.loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        loss = float(output.loss.detach())
        losses.append(loss)
        batch_tokens = int(batch["attention_mask"].sum())
        examples_seen += batch["input_ids"].shape[0]
        tokens_seen += batch_tokens
        interval_tokens += batch_tokens
        interval_sequences += batch["input_ids"].shape[0]

        done = step + 1
        if done % config.log_every == 0 or done == config.max_steps:
            now = time.perf_counter()
            interval_seconds = max(now - interval_start, 1e-9)
            steps_in_interval = (done - 1) % config.log_every + 1
            report = {
                "step": done,
                "max_steps": config.max_steps,
                "loss": sum(losses[-steps_in_interval:]) / steps_in_interval,
                "lr": lr,
                "tokens_per_second": interval_tokens / interval_seconds,
                "sequences_per_second": interval_sequences / interval_seconds,
                "elapsed_seconds": now - started,
            }
            log.info(
                "step %d/%d | loss %.3f | lr %.1e | tok/s %s | seq/s %.2f",
                done,
                config.max_steps,
                report["loss"],
                lr,
                _compact(report["tokens_per_second"]),
                report["sequences_per_second"],
            )
            if progress is not None:
                progress(report)
            interval_start, interval_tokens, interval_sequences = now, 0, 0

    model.eval()
    seconds = time.perf_counter() - started
    report = TrainReport(
        steps=config.max_steps,
        examples_seen=examples_seen,
        tokens_seen=tokens_seen,
        final_loss=losses[-1],
        mean_loss=sum(losses) / len(losses),
        seconds=seconds,
        peak_rss_mb=peak_rss_mb(),
        losses=losses,
    )
    log.info(
        "trained %d steps in %.1f s: %d sequences, %d tokens, final loss %.3f",
        report.steps,
        seconds,
        examples_seen,
        tokens_seen,
        report.final_loss,
    )
    return report


def _compact(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def save_checkpoint(model, tokenizer, path: Path) -> Path:
    """Save model weights (safetensors) and tokenizer to ``path`` atomically, and return ``path``.

    Files go to a temporary sibling directory first, which ``replace_directory`` then renames to
    ``path``. Readers see either the old or the new checkpoint, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        replace_directory(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("saved checkpoint to %s", path)
    return path
