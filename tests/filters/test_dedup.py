import numpy as np
import polars as pl
import pytest
import xxhash
from datasketch import LeanMinHash, MinHash
from hypothesis import given, settings
from hypothesis import strategies as st

from filters.dedup import (
    CLUSTER_SCHEMA,
    DedupConfig,
    candidate_pairs,
    connected_components,
    estimated_jaccard,
    exact_dedup,
    minhash_permutations,
    minhash_signatures,
    near_dedup,
    shingle_hashes,
    shingle_kind,
    shingles,
)
from filters.schema import SAMPLE_SCHEMA

VOCABULARY = [f"w{i}" for i in range(40)]


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


def test_signatures_match_datasketch():
    text_shingles = shingles("the quick brown fox jumps over the lazy dog and runs far away", "word", 3)
    reference = MinHash(num_perm=128, seed=7, hashfunc=xxhash.xxh32_intdigest)
    reference.update_batch([s.encode("utf-8") for s in text_shingles])
    ours = minhash_signatures([shingle_hashes(text_shingles)], minhash_permutations(128, 7))
    assert ours.dtype == np.uint32
    assert np.array_equal(ours[0], reference.hashvalues)


def test_permutations_match_datasketch():
    a, b = minhash_permutations(64, 3)
    reference_a, reference_b = MinHash(num_perm=64, seed=3).permutations
    assert np.array_equal(a, reference_a)
    assert np.array_equal(b, reference_b)


def test_signatures_load_into_lean_minhash():
    permutations = minhash_permutations(128, 1)
    first = shingle_hashes(shingles(" ".join(words(1)), "word", 5))
    second = shingle_hashes(shingles(" ".join(words(1)[:150] + words(2)[:50]), "word", 5))
    signatures = minhash_signatures([first, second], permutations)
    lean = [LeanMinHash(seed=1, hashvalues=row, scheme="affine32") for row in signatures]
    ours = estimated_jaccard(signatures, np.array([0]), np.array([1]))[0]
    assert lean[0].jaccard(lean[1]) == pytest.approx(ours)


def test_signatures_batched_equal_unbatched():
    permutations = minhash_permutations(128, 1)
    hash_lists = [shingle_hashes(shingles(" ".join(words(seed)), "word", 5)) for seed in range(30)]
    small_batches = minhash_signatures(hash_lists, permutations, batch_shingles=1024)
    one_batch = minhash_signatures(hash_lists, permutations, batch_shingles=10**7)
    assert np.array_equal(small_batches, one_batch)


def test_signatures_reject_empty_set():
    with pytest.raises(ValueError, match="non-empty"):
        minhash_signatures([np.array([1], dtype=np.uint32), np.array([], dtype=np.uint32)], minhash_permutations(16, 1))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(st.sampled_from(VOCABULARY), min_size=5, max_size=60),
    st.lists(st.sampled_from(VOCABULARY), min_size=5, max_size=60),
)
def test_jaccard_estimate_close_to_exact(first_words, second_words):
    first = set(shingles(" ".join(first_words), "word", 2))
    second = set(shingles(" ".join(second_words), "word", 2))
    exact = len(first & second) / len(first | second)
    signatures = minhash_signatures([shingle_hashes(first), shingle_hashes(second)], minhash_permutations(256, 11))
    estimate = estimated_jaccard(signatures, np.array([0]), np.array([1]))[0]
    # Standard error is at most sqrt(0.25 / 256) = 0.031; 0.16 is five of them.
    assert abs(estimate - exact) <= 0.16


def test_shingles_short_text_gives_none():
    assert shingles("only four words here", "word", 5) == []
    assert shingle_kind("en", "only four words here", 5, 3) == "none"


def test_shingles_chinese_use_characters():
    assert shingle_kind("zh", "怎样学好编程", 5, 3) == "char"
    assert shingles("学 好编程", "char", 3) == ["学好编", "好编程"]


def test_candidate_pairs_find_identical_signatures():
    signatures = np.array([[1, 2, 3, 4], [9, 9, 9, 9], [1, 2, 3, 4]], dtype=np.uint32)
    assert candidate_pairs(signatures, bands=2, rows=2).tolist() == [[0, 2]]


def test_candidate_pairs_large_bucket_pairs_with_lowest():
    signatures = np.zeros((5, 4), dtype=np.uint32)
    pairs = candidate_pairs(signatures, bands=2, rows=2, max_bucket_size=3)
    assert pairs.tolist() == [[0, 1], [0, 2], [0, 3], [0, 4]]


def test_connected_components_labels_lowest_node():
    assert connected_components(5, np.array([[3, 4], [1, 3]])) == [0, 1, 2, 1, 1]


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
        ("bands", 64, "bands=64 x rows=4 is invalid"),
        ("survivor_rule", "first", "survivor_rule='first' is invalid"),
        ("seed", -1, "seed=-1 is invalid"),
    ],
)
def test_config_rejects_invalid_values(field, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        DedupConfig(**{field: value})
