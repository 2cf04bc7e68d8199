"""Fine-tune an NLI cross-encoder for stage 2 from any BERT-family checkpoint.

Input is JSONL with one pair per line: ``{"premise": str, "hypothesis": str, "label": str}``,
where the labels are names such as ``contradiction``, ``entailment`` and ``neutral``. The output
directory contains a ``save_pretrained`` model and tokenizer whose ``config.id2label`` names the
labels, so ``sentence_transformers.CrossEncoder(output)`` and ``CrossEncoderNli`` load it.

When the base checkpoint already names exactly the training labels in its ``id2label``, its
classification head and label order are kept, which continues training an NLI model on new
domain or language data. Otherwise a new head is created with the labels in sorted order.

Run it as::

    python -m filters.nli_finetune --base ../shared/models/nli-minilm-l6 \\
        --train my_pairs.jsonl --eval my_dev.jsonl --output outputs/nli-mine --epochs 2
"""

import argparse
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    """Training settings; the defaults are the ones the offline nli-minilm-l6 model was trained with."""

    epochs: float = 3.0  # passes over the training pairs; fractions stop mid-epoch
    batch_size: int = 32  # pairs per optimizer step
    learning_rate: float = 5e-5  # peak AdamW learning rate after linear warm-up
    weight_decay: float = 0.01  # AdamW weight decay, not applied to biases and LayerNorm weights
    warmup_ratio: float = 0.06  # share of steps spent warming up linearly from 0
    max_length: int = 128  # tokens per premise/hypothesis pair; longer pairs are truncated in training
    max_steps: int | None = None  # stop after this many optimizer steps, overriding epochs
    seed: int = 13

    def __post_init__(self) -> None:
        if not self.epochs > 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        for name in ("batch_size", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1 or None, got {self.max_steps}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


def read_pairs(path: str | Path, limit: int | None = None) -> list[dict]:
    """Read premise/hypothesis/label JSONL; raise ValueError naming the line of a malformed record."""
    pairs: list[dict] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not valid JSON ({error.msg})") from None
            missing = [key for key in ("premise", "hypothesis", "label") if not isinstance(record.get(key), str)]
            if missing:
                raise ValueError(f"{path}:{number} is missing string fields {missing}; expected premise, hypothesis, label")
            pairs.append({"premise": record["premise"], "hypothesis": record["hypothesis"],
                          "label": record["label"].strip().lower()})
            if limit is not None and len(pairs) >= limit:
                break
    if not pairs:
        raise ValueError(f"{path} contains no pairs")
    return pairs


def _base_label_map(config, labels: set[str]) -> dict[int, str] | None:
    """Return the base checkpoint's id2label when it names exactly ``labels``, else None."""
    id2label = getattr(config, "id2label", None) or {}
    named = {int(index): str(name).strip().lower() for index, name in id2label.items()}
    return named if set(named.values()) == labels and len(named) == len(labels) else None


def load_base(base: str, labels: set[str]):
    """Load the tokenizer and a sequence classifier whose id2label covers ``labels``."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    base_config = AutoConfig.from_pretrained(base)
    id2label = _base_label_map(base_config, labels)
    if id2label is not None:
        log.info("keeping the classification head of %s with labels %s", base, id2label)
        model = AutoModelForSequenceClassification.from_pretrained(base, id2label=id2label,
                                                                   label2id={v: k for k, v in id2label.items()})
    else:
        id2label = dict(enumerate(sorted(labels)))
        log.info("new classification head on %s with labels %s", base, id2label)
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()},
            ignore_mismatched_sizes=True,
        )
    return tokenizer, model


def _batches(pairs: list[dict], batch_size: int, rng: random.Random) -> list[list[dict]]:
    """Shuffle, then group pairs of similar length so each batch pads little."""
    order = list(range(len(pairs)))
    rng.shuffle(order)
    group = batch_size * 50
    batches: list[list[dict]] = []
    for begin in range(0, len(order), group):
        chunk = sorted(order[begin : begin + group], key=lambda i: len(pairs[i]["premise"]) + len(pairs[i]["hypothesis"]))
        batches.extend([pairs[i] for i in chunk[k : k + batch_size]] for k in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def evaluate(model, tokenizer, pairs: list[dict], max_length: int, batch_size: int = 64) -> float:
    """Return the accuracy of ``model`` on labelled pairs."""
    import torch

    label2id = {str(name).lower(): int(index) for index, name in model.config.id2label.items()}
    model.eval()
    correct = 0
    with torch.no_grad():
        for begin in range(0, len(pairs), batch_size):
            batch = pairs[begin : begin + batch_size]
            encoded = tokenizer([p["premise"] for p in batch], [p["hypothesis"] for p in batch],
                                truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            predicted = model(**encoded).logits.argmax(dim=-1).tolist()
            correct += sum(int(p == label2id.get(pair["label"], -1)) for p, pair in zip(predicted, batch))
    return correct / len(pairs)


def finetune(base: str, train: list[dict], output: str | Path, config: FinetuneConfig,
             eval_pairs: list[dict] | None = None) -> dict:
    """Fine-tune ``base`` on ``train`` pairs and save a CrossEncoder-loadable directory to ``output``.

    Returns a summary with the steps run, the final training loss and the eval accuracy (None
    without ``eval_pairs``); the summary is also written to ``output/finetune_summary.json``.
    Raises ValueError when an eval label is not among the training labels.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    labels = {pair["label"] for pair in train}
    if eval_pairs is not None and (unknown := {p["label"] for p in eval_pairs} - labels):
        raise ValueError(f"eval labels {sorted(unknown)} do not occur in the training pairs {sorted(labels)}")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer, model = load_base(base, labels)
    label2id = {str(name).lower(): int(index) for index, name in model.config.id2label.items()}

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    no_decay = ("bias", "LayerNorm.weight", "layernorm", "layer_norm")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    started = time.perf_counter()
    step, losses = 0, []
    model.train()
    while step < total_steps:
        for batch in _batches(train, config.batch_size, rng):
            encoded = tokenizer([p["premise"] for p in batch], [p["hypothesis"] for p in batch],
                                truncation=True, max_length=config.max_length, padding=True, return_tensors="pt")
            target = torch.tensor([label2id[p["label"]] for p in batch])
            loss = torch.nn.functional.cross_entropy(model(**encoded).logits, target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
            step += 1
            if step % 100 == 0 or step == total_steps:
                log.info("step %d / %d | loss %.4f | %.1f pairs/s", step, total_steps, float(np.mean(losses[-100:])),
                         step * config.batch_size / (time.perf_counter() - started))
            if step >= total_steps:
                break

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.model_max_length = config.max_length
    tokenizer.save_pretrained(output)
    summary = {
        "base": base,
        "train_pairs": len(train),
        "steps": step,
        "final_loss": float(np.mean(losses[-20:])),
        "eval_accuracy": evaluate(model, tokenizer, eval_pairs, config.max_length) if eval_pairs else None,
        "id2label": {str(k): v for k, v in model.config.id2label.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "config": config.__dict__,
    }
    (output / "finetune_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("saved fine-tuned NLI model to %s: %s", output, summary)
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="local path or Hugging Face id of a BERT-family checkpoint")
    parser.add_argument("--train", required=True, help="training JSONL with premise, hypothesis and label fields")
    parser.add_argument("--eval", help="optional JSONL of the same shape; its accuracy goes into the summary")
    parser.add_argument("--output", required=True, help="directory to write the model, tokenizer and summary to")
    parser.add_argument("--epochs", type=float, default=FinetuneConfig.epochs, help="passes over the training pairs")
    parser.add_argument("--batch-size", type=int, default=FinetuneConfig.batch_size, help="pairs per optimizer step")
    parser.add_argument("--learning-rate", type=float, default=FinetuneConfig.learning_rate, help="peak AdamW rate")
    parser.add_argument("--max-length", type=int, default=FinetuneConfig.max_length, help="tokens per pair")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps, overriding --epochs")
    parser.add_argument("--limit", type=int, help="read at most this many training pairs")
    parser.add_argument("--seed", type=int, default=FinetuneConfig.seed, help="seed of shuffling and the new head")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                            max_length=args.max_length, max_steps=args.max_steps, seed=args.seed)
    eval_pairs = read_pairs(args.eval) if args.eval else None
    summary = finetune(args.base, read_pairs(args.train, args.limit), args.output, config, eval_pairs)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
