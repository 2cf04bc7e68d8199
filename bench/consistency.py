"""Measure the stage 2 consistency filter against human labels, with two baselines in the same run.

Parts:

1. champ-dataset's 540 annotated LLM solutions (444 with a first wrong step, 96 without). For
   each method it reports precision, recall and F1 of "has a wrong step". The methods are stage 2
   (``score_stage2`` and ``decide_stage2`` with the default config and the real embedder), a rule
   baseline, and random flagging at stage 2's flag rate averaged over seeds. The rule baseline
   flags a final-answer number that differs from the last ``= N`` computed in the reasoning.
   Stage 2 rejects a sample for any of three checks, and each is also reported alone against
   random flagging at its own rate: the NLI contradiction check, the false-arithmetic check,
   and the peer-answer check. The peer check reads the final answers of champ's other 18,900
   LLM conversations about the same problems (their labels are never read), as stage 2 would
   when the whole dump is curated. It also reports how often stage 2's NLI evidence pair
   contains the annotated wrong step, and the share of random runs that reach stage 2's F1.
   The solutions are split by a hash of the problem id with a 0.4 cut (90 of 270 problems): the
   ``dev`` problems were used to choose stage 2's pair selection and thresholds, and ``champ_*`` numbers are on the ``test``
   problems only. The same numbers for dev and for all 540 are printed for information.
2. The NLI model alone on the public NLI test sets: accuracy and contradiction recall
   (argmax over the three classes), and pairs per second on SNLI test.

Run from the repository root (about 12 minutes on 2 CPU cores at load 4-9, 30 or more when busier)::

    .venv/bin/python bench/consistency.py

The last line printed is one JSON object, also saved to ``bench/results/consistency.json``.
"""

import argparse
import hashlib
import json
import logging
import os
import random
import re
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from filters.consistency import CrossEncoderNli  # noqa: E402
from filters.embed import load_embedder  # noqa: E402
from filters.math_check import extract_final_answers, last_computed_value, parse_number  # noqa: E402
from filters.packaged import _champ_llm_row, package_dir  # noqa: E402
from filters.schema import SAMPLE_SCHEMA  # noqa: E402
from filters.sources import SourceConfig  # noqa: E402
from filters.stage2 import Stage2Config, decide_stage2, score_stage2  # noqa: E402
from pipelines.score_cache import WarehouseScoreCache  # noqa: E402
from pipelines.warehouse import Warehouse  # noqa: E402

log = logging.getLogger("bench.consistency")

NLI_MODEL = REPO_ROOT.parent / "shared" / "models" / "nli-minilm-l6"
NLI_DATA = REPO_ROOT.parent / "shared" / "data" / "nli"
RESULTS = REPO_ROOT / "bench" / "results" / "consistency.json"

DEV_FRACTION = 0.4  # share of champ problems used to choose stage 2's settings
SPLIT_SALT = "consistency-bench-v1"
RANDOM_SEEDS = 200

# name -> file under the NLI data folder; SNLI test is always scored in full.
NLI_TEST_SETS = {
    "snli_test": "test/snli_test.jsonl",
    "mnli_mismatched": "test/mnli_dev_mismatched_taxinli.jsonl",
    "xnli_en_test": "test/xnli_en_test.jsonl",
    "sick_test": "test/sick_test.jsonl",
    "cad_snli_test": "challenge/cad_snli_test.jsonl",
    "xnli_zh_test": "zh/xnli_zh_test.jsonl",
    "ocnli_dev": "zh/ocnli_dev.jsonl",
}


def problem_split(problem_id: str) -> str:
    """Return "dev" or "test" for a champ problem, from a salted hash of its id."""
    digest = hashlib.blake2b(f"{SPLIT_SALT}|{problem_id}".encode(), digest_size=8).digest()
    return "dev" if int.from_bytes(digest, "big") / 2**64 < DEV_FRACTION else "test"


def load_champ_annotated() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return champ's annotated LLM solutions as sample rows plus label columns, and their peers.

    The peers are the other LLM conversations about the same problems (about 72 per problem), with
    ``answer_group`` set to the problem. Stage 2 reads their final answers for the answer-consensus
    check; it neither scores nor reports them, and their labels are never read.
    """
    source = SourceConfig(name="champ", kind="packaged", dataset="champ")
    file = package_dir("champ") / "dataset_files" / "v0.json"
    problems = json.loads(file.read_text(encoding="utf-8"))["problems"]
    rows, peers = [], []
    for problem_id in sorted(problems):
        annotated = problems[problem_id]["fws_annotations"]
        for key in sorted(set(problems[problem_id]["conversations"]) - set(annotated)):
            row = _champ_llm_row(source, problems[problem_id], key, file)
            if row is not None:
                peers.append({"answer_group": problem_id, "task": "math", "prompt": row["prompt"], "response": row["response"]})
        for key in sorted(problems[problem_id]["fws_annotations"]):
            row = _champ_llm_row(source, problems[problem_id], key, file)
            if row is None:
                continue
            meta = row["meta"] if isinstance(row["meta"], dict) else json.loads(row["meta"])
            rows.append(
                {
                    "sample_id": hashlib.blake2b(row["item_id"].encode(), digest_size=8).hexdigest(),
                    "meta": json.dumps({"answer_group": problem_id}),
                    "source": "champ", "origin_id": row["item_id"], "task": "math", "lang": "en",
                    "prompt": row["prompt"], "response": row["response"], "reference": row["reference"],
                    "has_mistake": bool(meta["has_mistake"]),
                    "first_wrong_step": meta["first_wrong_step"],
                    "split": problem_split(problem_id),
                }
            )
    frame = pl.DataFrame(rows)
    frame = frame.with_columns(
        [pl.lit(None, dtype=dtype).alias(name) for name, dtype in SAMPLE_SCHEMA.items() if name not in frame.columns]
    )
    return frame, pl.DataFrame(peers)


def flag_metrics(flags: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of predicting ``labels`` (True = has a wrong step) with ``flags``."""
    true_positives = int(np.sum(flags & labels))
    flagged = int(np.sum(flags))
    positives = int(np.sum(labels))
    precision = true_positives / flagged if flagged else 0.0
    recall = true_positives / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "flag_rate": flagged / len(flags), "flagged": flagged}


def random_baseline(
    labels: np.ndarray, flag_rate: float, seeds: int = RANDOM_SEEDS, method_f1: float | None = None
) -> dict[str, float]:
    """Mean metrics of flagging round(flag_rate * n) samples chosen at random, over ``seeds`` seeds.

    With ``method_f1``, also the share of seeds whose F1 reaches it (``share_reaching_method_f1``):
    how often chance alone does as well, a one-sided permutation p-value.
    """
    count = round(flag_rate * len(labels))
    runs = []
    for seed in range(seeds):
        flags = np.zeros(len(labels), dtype=bool)
        flags[np.random.default_rng(seed).choice(len(labels), size=count, replace=False)] = True
        runs.append(flag_metrics(flags, labels))
    result = {key: float(np.mean([run[key] for run in runs])) for key in ("precision", "recall", "f1", "flag_rate")}
    if method_f1 is not None:
        result["share_reaching_method_f1"] = float(np.mean([run["f1"] >= method_f1 - 1e-12 for run in runs]))
    return result


def rule_baseline_flag(response: str) -> bool:
    """Flag a solution whose final-answer numbers all differ from the last ``= N`` in its reasoning."""
    answers = [parse_number(answer) for answer in extract_final_answers(response)]
    answers = [answer for answer in answers if answer is not None]
    last = last_computed_value(response)
    if last is None or not answers:
        return False
    return all(abs(float(answer) - float(last)) > 1e-9 * max(1.0, abs(float(last))) for answer in answers)


_WORDS = re.compile(r"\w+")


def evidence_contains_step(evidence: list[str | None], step: str | None) -> bool:
    """Return True when an evidence sentence overlaps the annotated first wrong step.

    Overlap means one text contains the other after whitespace and case folding, or at least half
    of the shorter one's words occur in the other.
    """
    if not step:
        return False
    step_norm = " ".join(_WORDS.findall(step.lower()))
    step_words = set(step_norm.split())
    for sentence in evidence:
        if not sentence:
            continue
        norm = " ".join(_WORDS.findall(sentence.lower()))
        if norm and (norm in step_norm or step_norm in norm):
            return True
        words = set(norm.split())
        if words and step_words and len(words & step_words) >= 0.5 * min(len(words), len(step_words)):
            return True
    return False


def run_champ(nli: CrossEncoderNli, config: Stage2Config, cache_path: str | None) -> dict:
    """Score champ's annotated solutions with stage 2 and the baselines; return metrics per split.

    With ``cache_path``, NLI scores are read from and written to the ``nli_score_cache`` table of
    that DuckDB file, the same cache the pipeline uses, so a rerun scores only new pairs.
    """
    frame, peers = load_champ_annotated()
    embedder = load_embedder()
    cache = WarehouseScoreCache(Warehouse(path=cache_path)) if cache_path else {}
    started = time.perf_counter()
    scored = score_stage2(frame.select(list(SAMPLE_SCHEMA)), config, nli, embedder, cache, peers=peers)
    seconds = time.perf_counter() - started
    scored_new = cache.flush() if isinstance(cache, WarehouseScoreCache) else len(cache)
    decided = decide_stage2(scored, config)
    rejected = set(decided.rejected["sample_id"].to_list())
    scored = scored.with_columns(
        pl.Series("has_mistake", frame["has_mistake"]),
        pl.Series("first_wrong_step", frame["first_wrong_step"]),
        pl.Series("split", frame["split"]),
        pl.col("sample_id").is_in(list(rejected)).alias("flagged"),
        pl.Series("rule_flagged", [rule_baseline_flag(text) for text in frame["response"]]),
        (pl.col("nli_error").is_null() & (pl.col("max_contradiction_prob") >= config.max_contradiction_prob))
        .fill_null(False)
        .alias("nli_flagged"),
        pl.col("arithmetic_error").is_not_null().alias("arithmetic_flagged"),
        pl.col("peer_disagreement").is_not_null().alias("peer_flagged"),
    )
    results: dict[str, dict] = {
        "directed_pairs_scored_new": scored_new,
        "directed_pairs_from_cache": cache.hits if isinstance(cache, WarehouseScoreCache) else 0,
        "seconds": seconds,
        "not_checked": int((scored["nli_pairs_scored"] == 0).sum()),
        "peer_responses": peers.height,
    }
    for split in ("dev", "test", "all"):
        part = scored if split == "all" else scored.filter(pl.col("split") == split)
        labels = part["has_mistake"].to_numpy()
        flags = part["flagged"].to_numpy()
        stage2 = flag_metrics(flags, labels)
        flagged_wrong = part.filter(pl.col("flagged") & pl.col("has_mistake"))
        hits = [
            evidence_contains_step([row["evidence_premise"], row["evidence_hypothesis"]], row["first_wrong_step"])
            for row in flagged_wrong.iter_rows(named=True)
        ]
        stage2["evidence_contains_step_rate"] = float(np.mean(hits)) if hits else 0.0
        results[split] = {
            "samples": part.height,
            "with_mistake": int(labels.sum()),
            "stage2": stage2,
            "rule_baseline": flag_metrics(part["rule_flagged"].to_numpy(), labels),
            "random_baseline": random_baseline(labels, stage2["flag_rate"], method_f1=stage2["f1"]),
        }
        # Each check of stage 2 alone, each against random flagging at its own rate.
        for check in ("nli", "arithmetic", "peer"):
            alone = flag_metrics(part[f"{check}_flagged"].to_numpy(), labels)
            alone["random_f1_at_same_rate"] = random_baseline(labels, alone["flag_rate"])["f1"]
            results[split][f"{check}_only"] = alone
    return results


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_nli_sets(nli: CrossEncoderNli, max_pairs: int | None) -> dict:
    """Accuracy and contradiction recall of the model's argmax on each NLI test set.

    Pairs longer than the model window are cut by the tokenizer here (``truncation=True``), as the
    model card's evaluation did; stage 2 itself never truncates.
    """
    names = {int(index): str(name).lower() for index, name in nli._model.model.config.id2label.items()}
    results = {}
    for name, relative in NLI_TEST_SETS.items():
        path = NLI_DATA / relative
        if not path.exists():
            log.warning("NLI test set %s is missing at %s; skipped", name, path)
            continue
        pairs = read_jsonl(path)
        if max_pairs is not None and name != "snli_test":
            pairs = pairs[:max_pairs]
        started = time.perf_counter()
        logits = nli._model.predict(
            [(p["premise"], p["hypothesis"]) for p in pairs], batch_size=nli.batch_size, show_progress_bar=False,
            convert_to_numpy=True,
        )
        seconds = time.perf_counter() - started
        predicted = [names[int(i)] for i in np.asarray(logits).argmax(axis=1)]
        gold = [p["label"] for p in pairs]
        contradictions = [pred for pred, label in zip(predicted, gold) if label == "contradiction"]
        results[name] = {
            "pairs": len(pairs),
            "accuracy": float(np.mean([pred == label for pred, label in zip(predicted, gold)])),
            "contradiction_recall": float(np.mean([pred == "contradiction" for pred in contradictions])),
            "pairs_per_s": len(pairs) / seconds,
        }
        log.info("%s: %s", name, results[name])
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Stage 2 against champ's human labels and NLI test sets.")
    parser.add_argument("--model", default=str(NLI_MODEL), help="NLI cross-encoder path or hub id")
    parser.add_argument("--nli-max-pairs", type=int, default=None,
                        help="score at most this many pairs of each NLI test set other than SNLI test (default: all)")
    parser.add_argument("--output", default=str(RESULTS), help="where to save the JSON result")
    parser.add_argument("--score-cache", help="DuckDB file whose nli_score_cache table stores champ pair scores "
                        "across runs (default: score every pair in memory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    nli = CrossEncoderNli(args.model)
    config = Stage2Config()
    champ = run_champ(nli, config, args.score_cache)
    nli_sets = run_nli_sets(nli, args.nli_max_pairs)

    test = champ["test"]
    summary = {
        "champ_split": "test",
        "champ_samples": test["samples"],
        "champ_f1": round(test["stage2"]["f1"], 4),
        "champ_precision": round(test["stage2"]["precision"], 4),
        "champ_recall": round(test["stage2"]["recall"], 4),
        "champ_flag_rate": round(test["stage2"]["flag_rate"], 4),
        "champ_evidence_contains_step_rate": round(test["stage2"]["evidence_contains_step_rate"], 4),
        "rule_baseline_f1": round(test["rule_baseline"]["f1"], 4),
        "rule_baseline_precision": round(test["rule_baseline"]["precision"], 4),
        "rule_baseline_recall": round(test["rule_baseline"]["recall"], 4),
        "random_f1": round(test["random_baseline"]["f1"], 4),
        "random_precision": round(test["random_baseline"]["precision"], 4),
        "random_share_reaching_champ_f1": round(test["random_baseline"]["share_reaching_method_f1"], 4),
        **{
            f"{check}_only_{key}": round(test[f"{check}_only"][metric], 4)
            for check in ("nli", "arithmetic", "peer")
            for key, metric in (("f1", "f1"), ("precision", "precision"), ("flag_rate", "flag_rate"),
                                ("random_f1", "random_f1_at_same_rate"))
        },
        "nli_accuracy_snli_test": round(nli_sets["snli_test"]["accuracy"], 4) if "snli_test" in nli_sets else None,
        "pairs_per_s": round(nli_sets["snli_test"]["pairs_per_s"], 1) if "snli_test" in nli_sets else None,
        "stage2_directed_pairs_per_s": (
            round(champ["directed_pairs_scored_new"] / champ["seconds"], 1) if not champ["directed_pairs_from_cache"] else None
        ),
        "max_contradiction_prob": config.max_contradiction_prob,
        "min_pair_cosine": config.min_pair_cosine,
        "machine_load_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    for name, values in nli_sets.items():
        summary[f"nli_accuracy_{name}"] = round(values["accuracy"], 4)
        summary[f"nli_contradiction_recall_{name}"] = round(values["contradiction_recall"], 4)
    details = {"summary": summary, "champ": champ, "nli": nli_sets, "stage2_config": config.__dict__}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(details, indent=2, default=str) + "\n")
    for split in ("dev", "test", "all"):
        part = champ[split]
        print(f"champ {split:4s} n={part['samples']:3d} | stage2 " + _fmt(part["stage2"]) + " | rule "
              + _fmt(part["rule_baseline"]) + " | random " + _fmt(part["random_baseline"])
              + f" (share of random runs reaching stage 2's F1: {part['random_baseline']['share_reaching_method_f1']:.3f})")
        for check in ("nli", "arithmetic", "peer"):
            alone = part[f"{check}_only"]
            print(f"      {check:10s} alone " + _fmt(alone) + f" | random at its rate F1 {alone['random_f1_at_same_rate']:.3f}")
    for name, values in nli_sets.items():
        print(f"{name:16s} n={values['pairs']:5d} accuracy {values['accuracy']:.4f} "
              f"contradiction recall {values['contradiction_recall']:.4f} {values['pairs_per_s']:.0f} pairs/s")
    print(json.dumps(summary))
    return summary


def _fmt(metrics: dict) -> str:
    return f"P {metrics['precision']:.3f} R {metrics['recall']:.3f} F1 {metrics['f1']:.3f} rate {metrics['flag_rate']:.3f}"


if __name__ == "__main__":
    main()
