import numpy as np
import polars as pl
import pytest

from filters.embed import load_embedder
from filters.schema import SAMPLE_SCHEMA
from filters.semantic_dedup import SemanticDedupConfig, semantic_dedup, similar_pairs
from filters.stage1 import Stage1Config, run_stage1
from filters.toxicity import ProfanityCheckScorer


def frame(rows: list[dict]) -> pl.DataFrame:
    records = []
    for row in rows:
        record = {name: None for name in SAMPLE_SCHEMA}
        record.update(source="unit", task="chat", lang="en", **row)
        records.append(record)
    return pl.DataFrame(records, schema=SAMPLE_SCHEMA | {"quality_score": pl.Float64})


PARAPHRASES = [
    {"sample_id": "p1", "prompt": "How do I reverse a list in Python?",
     "response": "Use slicing with a step of minus one: my_list[::-1] returns a reversed copy.", "quality_score": 1.0},
    {"sample_id": "p2", "prompt": "How can I reverse a list in Python?",
     "response": "Slice it with a step of -1, so my_list[::-1] returns a reversed copy.", "quality_score": 1.0},
    {"sample_id": "p3", "prompt": "How do I reverse a list in Python?",
     "response": "Call my_list.sort() to put the items in ascending order.", "quality_score": 1.0},
    {"sample_id": "p4", "prompt": "What is the capital of France?",
     "response": "The capital of France is Paris.", "quality_score": 1.0},
]


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def test_similar_pairs_need_prompt_and_response():
    prompts = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    responses = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    pairs, scores = similar_pairs(prompts, responses, 0.9, block_rows=2)
    assert pairs.tolist() == [[0, 1]]
    assert scores.tolist() == [1.0]


def test_semantic_dedup_removes_paraphrase(embedder):
    result = semantic_dedup(frame(PARAPHRASES), embedder, SemanticDedupConfig())
    assert set(result.kept["sample_id"].to_list()) == {"p1", "p3", "p4"}
    assert result.rejected["reason"].to_list() == ["semantic_duplicate"]
    assert result.rejected["duplicate_of"].to_list() == ["p1"]
    assert result.rejected["score"].item() >= 0.95


def test_semantic_dedup_cluster_table(embedder):
    clusters = semantic_dedup(frame(PARAPHRASES), embedder, SemanticDedupConfig()).tables["clusters"]
    assert clusters["kind"].unique().to_list() == ["semantic"]
    assert clusters.filter(pl.col("is_survivor"))["sample_id"].to_list() == ["p1"]


def test_stage1_semantic_dedup_off_by_default(embedder):
    samples = frame(PARAPHRASES).drop("quality_score")
    default = run_stage1(samples, Stage1Config(), ProfanityCheckScorer())
    enabled = run_stage1(samples, Stage1Config(semantic_dedup=True), ProfanityCheckScorer(), embedder)
    assert default.kept.height == 4
    assert "semantic_duplicate" not in default.reason_counts()
    assert enabled.reason_counts() == {"semantic_duplicate": 1}
    enabled.check_conservation(samples["sample_id"])


def test_semantic_config_rejects_invalid_cosine():
    with pytest.raises(ValueError, match="min_cosine=1.5 is invalid"):
        SemanticDedupConfig(min_cosine=1.5)
