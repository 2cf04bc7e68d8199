"""Stage 3 and the blocking decontamination check on the real packaged sources of config/sources.yaml."""

from dataclasses import replace

import polars as pl
import pytest

from assets.stage3 import no_eval_contamination
from filters.embed import load_embedder
from filters.ingest import read_source
from filters.packaged import build_evaluation_sets
from filters.sources import load_sources_config
from filters.stage3 import Stage3Config, run_stage3
from pipelines.warehouse import REPO_ROOT, Warehouse

# Rows per source, so the sandbox runs every human_eval train problem while the test stays short.
MAX_ROWS_PER_SOURCE = 200


@pytest.fixture(scope="module")
def real_stage3(tmp_path_factory):
    sources = [
        replace(source, max_rows=min(source.max_rows or MAX_ROWS_PER_SOURCE, MAX_ROWS_PER_SOURCE))
        for source in load_sources_config(REPO_ROOT / "config" / "sources.yaml")
        if source.enabled and source.kind == "packaged"
    ]
    train = pl.concat([read_source(source).samples for source in sources], how="diagonal_relaxed")
    eval_sets = build_evaluation_sets(sources, max_per_task=None)
    result = run_stage3(train, Stage3Config(), eval_sets, load_embedder())
    warehouse = Warehouse(path=str(tmp_path_factory.mktemp("real_stage3") / "warehouse.duckdb"), lock_timeout_s=120)
    warehouse.replace_table("selected_samples", result.kept)
    warehouse.replace_table("evaluation_sets", eval_sets)
    return {"train": train, "eval_sets": eval_sets, "result": result, "warehouse": warehouse}


def per_task_counts(result) -> dict[tuple[str, str], int]:
    rows = pl.concat(
        [result.kept.select("task", pl.lit("kept").alias("reason")), result.rejected.select("task", "reason")]
    )
    return {(task, reason): n for task, reason, n in rows.group_by("task", "reason").len().iter_rows()}


def test_real_sources_cover_every_task(real_stage3):
    tasks = set(real_stage3["train"]["task"].unique().to_list())
    assert {"math", "code", "chat"} <= tasks


def test_real_sources_stage3_conserves_rows(real_stage3):
    result = real_stage3["result"]
    result.check_conservation(real_stage3["train"]["sample_id"])
    assert result.kept.height + result.rejected.height == real_stage3["train"].height


def test_real_sources_per_task_counts_by_reason(real_stage3):
    counts = per_task_counts(real_stage3["result"])
    print("per-task kept/rejected by reason:", dict(sorted(counts.items())))
    for task in ("math", "code", "chat"):
        assert counts.get((task, "kept"), 0) > 0
    # The annotated LLM solutions of champ contain wrong final answers.
    assert counts.get(("math", "answer_mismatch"), 0) > 0


def test_real_sources_human_eval_canonical_solutions_pass(real_stage3):
    kept = real_stage3["result"].kept.filter(pl.col("source") == "human_eval")
    rejected = real_stage3["result"].rejected.filter(pl.col("source") == "human_eval")
    train = real_stage3["train"].filter(pl.col("source") == "human_eval")
    # HumanEval repeats a few problem statements, so a train copy of an eval problem is contaminated.
    assert set(rejected["reason"].to_list()) <= {"contaminated"}
    assert kept.height + rejected.height == train.height
    assert set(kept["code_status"].to_list()) == {"passed"}


def test_real_sources_contamination_check_passes_on_demo_split(real_stage3):
    # Stage 3 rejects the real overlaps first: CHAMP sister problems across the split, few-shot
    # prompts that quote an eval problem, and repeated chatterbot lines. The check then passes.
    contaminated = real_stage3["result"].rejected.filter(pl.col("reason") == "contaminated")
    print("contaminated rows rejected by stage 3:", contaminated.group_by("source").len().to_dicts())
    check = no_eval_contamination(warehouse=real_stage3["warehouse"])
    assert check.passed
    assert check.metadata["matched_train_rows"].value == 0


@pytest.mark.parametrize("benchmark", ["gsm_symbolic", "human_eval", "champ"])
def test_real_sources_contamination_check_fails_on_planted_copy(real_stage3, benchmark):
    warehouse = real_stage3["warehouse"]
    selected = warehouse.read_table("selected_samples")
    item = real_stage3["eval_sets"].filter(pl.col("benchmark") == benchmark).row(0, named=True)
    # Embedded in a longer prompt with different line wrapping, as a copied item usually is.
    wrapped = "Here is a practice problem for you.\n" + item["prompt"].replace(" ", "\n", 3) + "\nShow your work."
    planted = selected.head(1).with_columns(
        pl.lit(f"planted-{benchmark}").alias("sample_id"), pl.lit(wrapped).alias("prompt")
    )
    warehouse.replace_table("selected_samples", pl.concat([selected, planted]))
    try:
        check = no_eval_contamination(warehouse=warehouse)
        assert not check.passed
        assert check.metadata["matched_train_rows"].value == 1
        assert benchmark in check.metadata["per_benchmark"].value
    finally:
        warehouse.replace_table("selected_samples", selected)


@pytest.fixture(scope="module")
def task_accuracy(real_stage3):
    from filters.task_label import measure_task_labeling

    accuracy = measure_task_labeling(real_stage3["train"], load_embedder())
    print("task labeling accuracy per task:", accuracy)
    return accuracy


@pytest.mark.parametrize("task", ["math", "code"])
def test_real_sources_task_labeling_accuracy(task_accuracy, task):
    assert task_accuracy[task] >= 0.8


@pytest.mark.xfail(strict=True, reason="chatterbot lines in 28 languages: about 45% are labelled chat by the English embedder")
def test_real_sources_task_labeling_accuracy_chat(task_accuracy):
    assert task_accuracy["chat"] >= 0.8
