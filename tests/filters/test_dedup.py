import numpy as np
import polars as pl
import pytest

from filters.dedup import CLUSTER_SCHEMA, DedupConfig, connected_components, exact_dedup, near_dedup
from filters.schema import SAMPLE_SCHEMA

def frame(rows: list[dict]) -> pl.DataFrame:
    records = []
    for row in rows:
        record = {name: None for name in SAMPLE_SCHEMA}
        record.update(source="unit", task="chat", lang="en", **row)
        records.append(record)
    return pl.DataFrame(records, schema=SAMPLE_SCHEMA | {"quality_score": pl.Float64})


def words(seed: int, count: int = 200) -> list[str]:
    generator = np.random.default_rng(seed)
    return [f"t{value}" for value in generator.integers(0, 5000, count)]


def test_connected_components_labels_lowest_node():
    assert connected_components(5, np.array([[3, 4], [1, 3]])).tolist() == [0, 1, 2, 1, 1]


def test_exact_dedup_quality_then_id_prefers_quality():
    samples = frame(
        [
            {"sample_id": "a", "prompt": "Q", "response": "Same answer.", "quality_score": 0.5},
            {"sample_id": "b", "prompt": "Q", "response": "Same  answer.", "quality_score": 0.9},
            {"sample_id": "c", "prompt": "Q", "response": "Same answer.\n", "quality_score": 0.9},
        ]
    )
    result = exact_dedup(samples, "quality_then_id")
    assert result.kept["sample_id"].to_list() == ["b"]
    assert result.rejected["duplicate_of"].to_list() == ["b", "b"]
    assert result.rejected["reason"].to_list() == ["exact_duplicate", "exact_duplicate"]


def test_exact_dedup_lowest_id_rule():
    samples = frame(
        [
            {"sample_id": "b", "prompt": "Q", "response": "Same answer.", "quality_score": 0.9},
            {"sample_id": "a", "prompt": "Q", "response": "Same answer.", "quality_score": 0.1},
        ]
    )
    result = exact_dedup(samples, "lowest_id")
    assert result.kept["sample_id"].to_list() == ["a"]
    assert result.tables["clusters"].schema == pl.Schema(CLUSTER_SCHEMA)
    assert result.tables["clusters"]["cluster_id"].to_list() == ["exact:a", "exact:a"]


def test_exact_dedup_needs_quality_for_default_rule():
    samples = frame([{"sample_id": "a", "prompt": "Q", "response": "A"}]).drop("quality_score")
    with pytest.raises(ValueError, match="needs a quality_score column"):
        exact_dedup(samples, "quality_then_id")


def test_exact_dedup_prompt_is_part_of_key():
    samples = frame(
        [
            {"sample_id": "a", "prompt": "Q1", "response": "Same answer.", "quality_score": 1.0},
            {"sample_id": "b", "prompt": "Q2", "response": "Same answer.", "quality_score": 1.0},
        ]
    )
    assert exact_dedup(samples).kept.height == 2


def near_rows(edit_rate: float, count: int = 40) -> list[dict]:
    rows = []
    generator = np.random.default_rng(5)
    for index in range(count):
        original = words(100 + index)
        edited = list(original)
        for position in generator.choice(len(edited), int(edit_rate * len(edited)), replace=False):
            edited[position] = f"edit{generator.integers(10**6)}"
        prompt = f"Write document {index} please."
        rows.append({"sample_id": f"d{index:03d}a", "prompt": prompt, "response": " ".join(original), "quality_score": 1.0})
        rows.append({"sample_id": f"d{index:03d}b", "prompt": prompt, "response": " ".join(edited), "quality_score": 1.0})
    return rows


def test_near_dedup_catches_five_percent_edits():
    result = near_dedup(frame(near_rows(0.05)), DedupConfig())
    assert result.rejected.height >= 38
    assert set(result.rejected["reason"].to_list()) == {"near_duplicate"}
    assert all(sample_id.endswith("b") for sample_id in result.rejected["sample_id"].to_list())


def test_near_dedup_keeps_unrelated_texts():
    rows = [
        {"sample_id": f"u{i}", "prompt": "Same prompt for all.", "response": " ".join(words(i)), "quality_score": 1.0}
        for i in range(50)
    ]
    result = near_dedup(frame(rows), DedupConfig())
    assert result.rejected.height == 0
    assert result.tables["clusters"].height == 0


def test_near_dedup_independent_of_row_order():
    samples = frame(near_rows(0.1, count=15))
    forward = near_dedup(samples, DedupConfig())
    backward = near_dedup(samples.reverse(), DedupConfig())
    assert forward.tables["clusters"].equals(backward.tables["clusters"])
    assert forward.rejected.sort("sample_id").equals(backward.rejected.sort("sample_id"))


def test_near_dedup_ledger_scores_and_clusters():
    result = near_dedup(frame(near_rows(0.05, count=3)), DedupConfig())
    assert (result.rejected["score"] >= 0.5).all()
    assert result.rejected["threshold"].to_list() == [0.5, 0.5, 0.5]
    clusters = result.tables["clusters"]
    assert clusters.schema == pl.Schema(CLUSTER_SCHEMA)
    assert clusters.filter(pl.col("is_survivor"))["similarity"].to_list() == [1.0, 1.0, 1.0]
    assert clusters["kind"].unique().to_list() == ["near"]


def test_near_dedup_different_prompts_not_merged():
    text = " ".join(words(1))
    samples = frame(
        [
            {"sample_id": "a", "prompt": "Summarize the first report in detail for me.", "response": text},
            {"sample_id": "b", "prompt": "Translate the second letter into plain French now.", "response": text},
        ]
    ).with_columns(pl.lit(1.0).alias("quality_score"))
    assert near_dedup(samples, DedupConfig()).kept.height == 2


def test_near_dedup_seed_changes_nothing_for_clear_duplicates():
    samples = frame(near_rows(0.02, count=5))
    first = near_dedup(samples, DedupConfig(seed=1)).kept["sample_id"].to_list()
    second = near_dedup(samples, DedupConfig(seed=99)).kept["sample_id"].to_list()
    assert first == second


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("near_duplicate_threshold", 0.0, "near_duplicate_threshold=0.0 is invalid"),
        ("bands", 64, "bands=64 x rows=3 is invalid"),
        ("survivor_rule", "first", "survivor_rule='first' is invalid"),
        ("seed", -1, "seed=-1 is invalid"),
    ],
)
def test_config_rejects_invalid_values(field, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        DedupConfig(**{field: value})
