"""Compare feedback-driven mixture weights with uniform and proportional mixing on the same budget.

Run from the repository root, with the project's environment loaded::

    set -a && source .env && set +a && .venv/bin/python bench/mixing.py

Data: the training pool is the ``selected_samples`` table and the evaluation items are the
``evaluation_sets`` table of an existing warehouse (``--warehouse``, default
``outputs/warehouse.duckdb``, written by ``curation_job`` or ``make demo`` from the packaged real
data). Both tables are read once at the start. Each task's evaluation items are ordered by the
sha256 of their ``item_id`` and split into a dev part, which only the feedback rule reads, and a
disjoint test part, which is the only part reported. The settings of this script were fixed
before any run; the default mixing cap was chosen among candidates on dev losses (see Arms).

Model: the full SmolLM2-135M-Instruct from the packaged GGUF file (all 30 layers), but only its
top ``--train-layers`` decoder layers and the final norm are trained (default 8). The tied
embeddings and the lower layers are frozen, so autograd neither stores their activations nor
computes their gradients. Training all layers runs at well under 1 sequence/s on a loaded 2-core
CPU, and 3 arms x 2 seeds x 4 rounds would not fit in an hour. Dropping layers instead is not an
option: a SmolLM2 with its first 6 layers, or its first 3 and last 3, has a held-out loss of 11-22
nats against 1.7-3.1 for the full model. Each (seed, arm) pair runs in its own process
(``--workers``).

Arms: (a) ``feedback``, the default ``MixingConfig`` (multiplicative weights on the held-out
loss), (b) ``uniform``, (c) ``proportional``, and optional candidate feedback settings
(``--candidate name:key=value,...``). Every arm starts from the same partly frozen base model,
continues from its own previous round like the loop's default, and takes the same optimizer steps
with the same batch size, learning rate and per-round seeds. A feedback arm's round 0 reads the
base model's dev losses, and round r reads the dev losses of round r-1's model.

Candidates are judged on dev only: every arm is also evaluated on the dev items each round, the
acceptance test (worst-task loss below both static arms in every seed, mean loss within the
seed-to-seed spread of uniform) is applied to the dev losses. The chosen arm is the one with the
smallest mean-loss gap to uniform among the arms that pass, or among all feedback arms when none
passes. The default wins a tie. Test losses of every arm are printed, and the headline numbers are those
of the chosen arm.

Prints per-round weights and per-task test loss for each arm and seed, the final worst-task and
mean test loss with their ratios, and as its last line one JSON object, also written to
``bench/results/mixing.json``.
"""

import argparse
import hashlib
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import duckdb  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from pipelines.warehouse import resolve_repo_path  # noqa: E402
from trainer.data import build_examples, sample_mixture  # noqa: E402
from trainer.evaluate import EvalConfig, evaluate, task_signals  # noqa: E402
from trainer.mixing import MixingConfig, compute_weights  # noqa: E402
from trainer.models import PACKAGED_SMOLLM2, load_causal_lm  # noqa: E402
from trainer.train import TrainConfig, peak_rss_mb, train  # noqa: E402

STATIC_ARMS = ("uniform", "proportional")
DEFAULT_ARM = "feedback"
RESULT_PATH = REPO_ROOT / "bench" / "results" / "mixing.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", default="outputs/warehouse.duckdb", help="DuckDB file with the curated tables.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="Seeds; each runs every arm.")
    parser.add_argument("--rounds", type=int, default=4, help="Rounds per arm.")
    parser.add_argument(
        "--train-layers", type=int, default=8, help="Top decoder layers that are trained; 0 trains every parameter."
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="Worker processes, one (seed, arm) pair each; 0 means one per pair."
    )
    parser.add_argument("--steps", type=int, default=4, help="Optimizer steps per round, equal for every arm.")
    parser.add_argument("--batch-size", type=int, default=4, help="Sequences per optimizer step.")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="Peak AdamW learning rate.")
    parser.add_argument("--max-seq-len", type=int, default=128, help="Tokens per training and evaluation sequence.")
    parser.add_argument("--dev-per-task", type=int, default=8, help="Dev items per task (feedback signal).")
    parser.add_argument("--test-per-task", type=int, default=12, help="Test items per task (reported).")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    parser.add_argument("--output", default=str(RESULT_PATH), help="Where the JSON summary is written.")
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="Another feedback arm with MixingConfig overrides, e.g. cap07:max_weight=0.7; chosen on dev only.",
    )
    return parser.parse_args(argv)


def parse_candidates(specs: list[str]) -> dict[str, dict]:
    """Turn ``name:key=value,...`` strings into MixingConfig overrides, checked by building the config."""
    candidates = {}
    for spec in specs:
        name, _, body = spec.partition(":")
        if not name or name in (DEFAULT_ARM, *STATIC_ARMS) or name in candidates:
            raise SystemExit(f"--candidate {spec!r}: use a new arm name before ':', e.g. cap07:max_weight=0.7")
        overrides = {}
        for item in filter(None, body.split(",")):
            key, _, value = item.partition("=")
            if key not in MixingConfig.__dataclass_fields__ or key in ("rule", "seed"):
                raise SystemExit(f"--candidate {spec!r}: {key!r} is not a MixingConfig setting of a feedback rule")
            overrides[key] = value if key == "signal" else float(value)
        try:
            MixingConfig(**overrides)
        except ValueError as error:
            raise SystemExit(f"--candidate {spec!r}: {error}") from error
        candidates[name] = overrides
    return candidates


def arm_config(arm: str, overrides: dict, seed: int) -> MixingConfig:
    if arm in STATIC_ARMS:
        # Unclipped, so the baselines are exactly uniform and proportional whatever the default bounds.
        return MixingConfig(rule=arm, seed=seed, min_weight=0.0, max_weight=1.0)
    return MixingConfig(seed=seed, **overrides)


def load_pool(warehouse_path: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read the selected samples and the evaluation items once, over a read-only connection.

    A read-only connection opens even while a pipeline run has the file open for writing.
    """
    with duckdb.connect(str(resolve_repo_path(warehouse_path)), read_only=True) as con:
        samples = con.sql(
            "SELECT sample_id, task, prompt, response FROM selected_samples WHERE task IS NOT NULL"
        ).pl()
        items = con.sql("SELECT item_id, task, prompt, response FROM evaluation_sets WHERE task IS NOT NULL").pl()
    return samples, items


def split_dev_test(items: pl.DataFrame, dev_per_task: int, test_per_task: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Order each task's items by sha256(item_id) and take the first ones as dev, the next ones as test.

    A task with fewer items than dev + test keeps the dev/test ratio, so both parts stay non-empty
    when the task has at least two items.
    """
    keyed = items.with_columns(
        pl.col("item_id").map_elements(lambda i: hashlib.sha256(i.encode()).hexdigest(), return_dtype=pl.String).alias("_key")
    ).sort("task", "_key")
    dev_parts, test_parts = [], []
    for task in sorted(keyed["task"].unique().to_list()):
        rows = keyed.filter(pl.col("task") == task)
        wanted = dev_per_task + test_per_task
        if rows.height >= wanted:
            n_dev, n_test = dev_per_task, test_per_task
        else:
            n_dev = max(1, round(rows.height * dev_per_task / wanted))
            n_test = rows.height - n_dev
        dev_parts.append(rows.head(n_dev))
        test_parts.append(rows.slice(n_dev, n_test))
    return pl.concat(dev_parts).drop("_key"), pl.concat(test_parts).drop("_key")


def freeze_lower_layers(model, train_layers: int):
    """Freeze every parameter except the top ``train_layers`` decoder layers and the final norm.

    ``train_layers`` = 0 leaves every parameter trainable. Returns the number of trainable parameters.
    """
    total = len(model.model.layers)
    if not 0 <= train_layers <= total:
        raise ValueError(f"--train-layers={train_layers} is invalid; the model has {total} decoder layers")
    if train_layers:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for module in [*model.model.layers[total - train_layers :], model.model.norm]:
            for parameter in module.parameters():
                parameter.requires_grad_(True)
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def losses_by_task(stats: pl.DataFrame) -> dict[str, float]:
    return {row["task"]: float(row["mean_loss"]) for row in stats.iter_rows(named=True) if row["mean_loss"] is not None}


def run_arm(arm, overrides, base_model, tokenizer, pool, dev, test, base_dev, seed, args) -> list[dict]:
    """Train one arm for ``args.rounds`` rounds and return one record per round."""
    model = base_model
    available = {task: int(n) for task, n in pool.group_by("task").len().iter_rows()}
    config = arm_config(arm, overrides, seed)
    is_feedback = arm not in STATIC_ARMS
    eval_config = EvalConfig(batch_size=8, max_seq_len=args.max_seq_len, max_generate_per_task=0, max_new_tokens=1)
    previous, feedback = None, task_signals(base_dev) if is_feedback else None
    records = []
    for round_index in range(args.rounds):
        round_seed = seed * 1000 + round_index
        decision = compute_weights(previous, feedback, available, config)
        rows = sample_mixture(pool, decision.weights, args.steps * args.batch_size, seed=round_seed)
        examples = build_examples(rows, tokenizer, args.max_seq_len)
        train_config = TrainConfig(
            max_steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_steps=1,
            max_seq_len=args.max_seq_len,
            seed=round_seed,
            log_every=args.steps,
            num_threads=args.threads,
        )
        report = train(model, tokenizer, examples, train_config)
        test_loss = losses_by_task(evaluate(model, tokenizer, test, eval_config))
        dev_stats = evaluate(model, tokenizer, dev, eval_config)
        if is_feedback:
            feedback = task_signals(dev_stats)
        previous = decision.weights
        records.append(
            {
                "round": round_index,
                "weights": {task: round(weight, 4) for task, weight in decision.weights.items()},
                "test_loss": test_loss,
                "dev_loss": losses_by_task(dev_stats),
                "train_seconds": round(report.seconds, 1),
                "sequences_per_second": round(report.examples_seen / max(report.seconds, 1e-9), 3),
            }
        )
        print(
            f"  seed {seed} {arm:14s} round {round_index} | weights {records[-1]['weights']} | "
            f"test loss {_fmt(test_loss)} | train {report.seconds:.0f} s ({records[-1]['sequences_per_second']} seq/s)",
            flush=True,
        )
    return records


def load_base_model(train_layers: int):
    """Load SmolLM2-135M-Instruct and freeze all but its top ``train_layers`` layers."""
    model, tokenizer = load_causal_lm(PACKAGED_SMOLLM2)
    trainable = freeze_lower_layers(model, train_layers)
    return model, tokenizer, trainable


def run_arm_job(seed, arm, overrides, pool, dev, test, base_dev, args) -> list[dict]:
    """Load the base model and run one arm for one seed; the entry point of a worker process."""
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    base_model, tokenizer, _ = load_base_model(args.train_layers)
    return run_arm(arm, overrides, base_model, tokenizer, pool, dev, test, base_dev, seed, args)


def _fmt(losses: dict[str, float]) -> str:
    return "{" + ", ".join(f"{task}: {loss:.4f}" for task, loss in sorted(losses.items())) + "}"


def summarize(results: dict[int, dict[str, list[dict]]], arm: str, key: str = "test_loss") -> dict:
    """Final worst-task and mean loss of feedback ``arm`` against the static arms, per seed, on ``key``.

    The seed-to-seed spread is the range over seeds of an arm's final mean loss, the larger of
    ``arm`` and uniform.
    """
    arms = (arm, *STATIC_ARMS)
    per_seed = {}
    for seed, by_arm in results.items():
        final = {name: by_arm[name][-1][key] for name in arms}
        worst = {name: max(final[name].values()) for name in arms}
        mean = {name: sum(final[name].values()) / len(final[name]) for name in arms}
        per_seed[seed] = {
            "worst_loss": worst,
            "mean_loss": mean,
            "worst_task": {name: max(final[name], key=final[name].get) for name in arms},
            "worst_loss_ratio_vs_uniform": worst[arm] / worst["uniform"],
            "worst_loss_ratio_vs_proportional": worst[arm] / worst["proportional"],
            "mean_loss_ratio_vs_uniform": mean[arm] / mean["uniform"],
            "mean_loss_diff_vs_uniform": mean[arm] - mean["uniform"],
        }
    spread = max(
        max(s["mean_loss"][name] for s in per_seed.values()) - min(s["mean_loss"][name] for s in per_seed.values())
        for name in (arm, "uniform")
    )
    rows = per_seed.values()
    return {
        "per_seed": per_seed,
        "mean_loss_spread": spread,
        "worst_loss_beats_both_static_arms": all(
            r["worst_loss"][arm] < min(r["worst_loss"]["uniform"], r["worst_loss"]["proportional"]) for r in rows
        ),
        "mean_loss_within_spread": all(r["mean_loss_diff_vs_uniform"] <= spread for r in rows),
        "max_mean_loss_diff_vs_uniform": max(r["mean_loss_diff_vs_uniform"] for r in rows),
    }


def choose_on_dev(results: dict[int, dict[str, list[dict]]], feedback_arms: list[str]) -> tuple[str, dict]:
    """Apply the acceptance test to dev losses and pick a feedback arm; never reads test losses."""
    judged = {arm: summarize(results, arm, "dev_loss") for arm in feedback_arms}

    def rank(arm: str) -> tuple:
        summary = judged[arm]
        passes = summary["worst_loss_beats_both_static_arms"] and summary["mean_loss_within_spread"]
        return (not passes, summary["max_mean_loss_diff_vs_uniform"], arm != DEFAULT_ARM)

    return min(feedback_arms, key=rank), judged


def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_average = os.getloadavg()

    pool, items = load_pool(args.warehouse)
    dev, test = split_dev_test(items, args.dev_per_task, args.test_per_task)
    counts = {
        task: {
            "pool": pool.filter(pl.col("task") == task).height,
            "dev": dev.filter(pl.col("task") == task).height,
            "test": test.filter(pl.col("task") == task).height,
        }
        for task in sorted(pool["task"].unique().to_list())
    }
    print(f"data from {args.warehouse}: {counts}", flush=True)

    base_model, tokenizer, trainable = load_base_model(args.train_layers)
    eval_config = EvalConfig(batch_size=8, max_seq_len=args.max_seq_len, max_generate_per_task=0, max_new_tokens=1)
    base_dev = evaluate(base_model, tokenizer, dev, eval_config)
    base_test = losses_by_task(evaluate(base_model, tokenizer, test, eval_config))
    del base_model
    print(f"base model test loss {_fmt(base_test)}; {trainable / 1e6:.1f}M trainable parameters", flush=True)

    candidates = {DEFAULT_ARM: {}, **parse_candidates(args.candidate)}
    arms = [*candidates, *STATIC_ARMS]
    workers = args.workers or len(args.seeds) * len(arms)
    jobs = [
        (seed, arm, candidates.get(arm, {}), pool, dev, test, base_dev, args) for seed in args.seeds for arm in arms
    ]
    if workers > 1:
        # spawn, not fork: a forked child of a process that already ran torch and the Rust tokenizer
        # can hang in their thread pools. Each worker loads the model from the local cache.
        with multiprocessing.get_context("spawn").Pool(workers) as pool_of_workers:
            finished = pool_of_workers.starmap(run_arm_job, jobs)
    else:
        finished = [run_arm_job(*job) for job in jobs]
    results: dict[int, dict[str, list[dict]]] = {seed: {} for seed in args.seeds}
    for (seed, arm, *_), records in zip(jobs, finished):
        results[seed][arm] = records

    chosen, judged = choose_on_dev(results, list(candidates))
    print("\nfeedback arms judged on dev losses (worst < both static arms in every seed; max mean gap vs uniform; spread):")
    for arm, dev_summary in judged.items():
        print(
            f"  {arm:14s} {candidates[arm] or 'default MixingConfig'}: worst beats both "
            f"{dev_summary['worst_loss_beats_both_static_arms']}, mean gap {dev_summary['max_mean_loss_diff_vs_uniform']:+.4f}, "
            f"spread {dev_summary['mean_loss_spread']:.4f}, within {dev_summary['mean_loss_within_spread']}"
        )
    print(f"chosen on dev: {chosen}")

    by_arm = {arm: summarize(results, arm) for arm in candidates}
    print("\nfinal test loss per seed (worst task, mean over tasks):")
    for arm, summary in by_arm.items():
        print(f" feedback arm {arm}{' (chosen on dev)' if arm == chosen else ''}:")
        for seed, row in summary["per_seed"].items():
            print(
                f"  seed {seed}: "
                + " | ".join(
                    f"{name} worst {row['worst_loss'][name]:.4f} ({row['worst_task'][name]}) mean {row['mean_loss'][name]:.4f}"
                    for name in (arm, *STATIC_ARMS)
                )
            )
            print(
                f"          {arm}/uniform worst {row['worst_loss_ratio_vs_uniform']:.4f}, "
                f"{arm}/proportional worst {row['worst_loss_ratio_vs_proportional']:.4f}, "
                f"{arm}/uniform mean {row['mean_loss_ratio_vs_uniform']:.4f} "
                f"(diff {row['mean_loss_diff_vs_uniform']:+.4f})"
            )
        print(
            f"  seed-to-seed spread of the final mean loss: {summary['mean_loss_spread']:.4f}; "
            f"worst < both static arms in every seed: {summary['worst_loss_beats_both_static_arms']}; "
            f"mean within the spread of uniform in every seed: {summary['mean_loss_within_spread']}"
        )

    summary = by_arm[chosen]
    per_seed = summary["per_seed"].values()
    result = {
        "seeds": list(args.seeds),
        "rounds": args.rounds,
        "worst_loss_ratio_vs_uniform": max(r["worst_loss_ratio_vs_uniform"] for r in per_seed),
        "worst_loss_ratio_vs_proportional": max(r["worst_loss_ratio_vs_proportional"] for r in per_seed),
        "mean_loss_ratio_vs_uniform": max(r["mean_loss_ratio_vs_uniform"] for r in per_seed),
        "mean_loss_diff_vs_uniform": summary["max_mean_loss_diff_vs_uniform"],
        "mean_loss_spread": summary["mean_loss_spread"],
        "worst_loss_beats_both_static_arms": summary["worst_loss_beats_both_static_arms"],
        "mean_loss_within_spread": summary["mean_loss_within_spread"],
        "chosen_arm": chosen,
        "feedback_rule": {
            k: v for k, v in MixingConfig(**candidates[chosen]).__dict__.items() if k != "seed"
        },
        "candidates": candidates,
        "dev_judgement": {
            arm: {k: v for k, v in dev_summary.items() if k != "per_seed"} for arm, dev_summary in judged.items()
        },
        "test_by_arm": {
            arm: {k: v for k, v in arm_summary.items() if k != "per_seed"} for arm, arm_summary in by_arm.items()
        },
        "model": PACKAGED_SMOLLM2,
        "train_layers": args.train_layers,
        "steps_per_round": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_seq_len": args.max_seq_len,
        "eval_items": counts,
        "base_test_loss": base_test,
        "per_round": {str(seed): arms for seed, arms in results.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_at_start": [round(x, 2) for x in load_average],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "code_version": code_version(),
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
