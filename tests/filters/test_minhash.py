import numpy as np
import polars as pl
import pytest
from datasketch import LeanMinHash, MinHash
from hypothesis import given, settings
from hypothesis import strategies as st

from filters.lang import uses_char_shingles
from filters.minhash import (
    KIND_NAMES,
    ShingleHashes,
    SignatureSettings,
    candidate_pairs,
    candidate_probability,
    char_shingle_mask,
    estimated_jaccard,
    expected_word_jaccard,
    lsh_parameters,
    minhash_permutations,
    minhash_signatures,
    shingle_hash,
    shingle_hashes_of_tokens,
    shingle_texts,
    sign_batches,
    sign_texts,
    signatures_of,
    token_lists,
)

VOCABULARY = [f"w{i}" for i in range(40)]


def words(seed: int, count: int = 200) -> list[str]:
    generator = np.random.default_rng(seed)
    return [f"t{value}" for value in generator.integers(0, 5000, count)]


def tokens_of(text: str, chars: bool = False) -> list[str]:
    return token_lists(pl.Series([text]), np.array([chars]), np.array(["\n" in text])).to_list()[0]


def reference_minhash(tokens: list[str], size: int, num_perm: int, seed: int) -> MinHash:
    """datasketch's own MinHash over the shingles of ``tokens``, hashed by ``shingle_hash``."""
    minhash = MinHash(num_perm=num_perm, seed=seed, hashfunc=shingle_hash)
    minhash.update_batch([tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)])
    return minhash


def test_permutations_match_datasketch():
    a, b = minhash_permutations(64, 3)
    reference_a, reference_b = MinHash(num_perm=64, seed=3).permutations
    assert np.array_equal(a, reference_a)
    assert np.array_equal(b, reference_b)


@pytest.mark.parametrize(
    ("text", "chars", "size"),
    [
        ("the quick brown fox jumps over the lazy dog and runs far away", False, 5),
        ("学习编程最好的方法是每天动手写代码，遇到问题先自己查阅官方文档", True, 3),
        ("```python\nfor x in xs:\n    a(x)\n    b()\n```", False, 3),
    ],
)
def test_signature_equals_datasketch_minhash(text, chars, size):
    settings_ = SignatureSettings(word_shingle_size=size, char_shingle_size=size, num_perm=128, seed=7)
    signed = sign_texts(pl.Series([text]), np.array([chars]), settings_)
    reference = reference_minhash(tokens_of(text, chars), size, 128, 7)
    assert signed.signatures.dtype == np.uint32
    assert np.array_equal(signed.signatures[0], reference.hashvalues)


def test_signatures_load_into_lean_minhash():
    texts = pl.Series([" ".join(words(1)), " ".join(words(1)[:150] + words(2)[:50])])
    signed = sign_texts(texts, np.array([False, False]), SignatureSettings(seed=1))
    lean = [LeanMinHash(seed=1, hashvalues=row, scheme="affine32") for row in signed.signatures]
    ours = estimated_jaccard(signed.signatures, np.array([0]), np.array([1]))[0]
    assert lean[0].jaccard(lean[1]) == pytest.approx(ours)


def test_signatures_batched_equal_unbatched():
    permutations = minhash_permutations(128, 1)
    tokens = token_lists(pl.Series([" ".join(words(seed)) for seed in range(30)]), np.zeros(30, dtype=bool))
    shingles = shingle_hashes_of_tokens(tokens, 5)
    small_runs = signatures_of(shingles, permutations, batch_shingles=1024)
    one_run = signatures_of(shingles, permutations, batch_shingles=10**7)
    assert np.array_equal(small_runs, one_run)


def test_shingles_do_not_cross_documents():
    tokens = pl.Series([["a", "b", "c"], ["d", "e"], ["f", "g", "h", "i"]])
    shingles = shingle_hashes_of_tokens(tokens, 3)
    assert shingles.counts.tolist() == [1, 0, 2]
    assert int(shingles.hashes[0]) == shingle_hash(["a", "b", "c"])
    assert int(shingles.hashes[2]) == shingle_hash(["g", "h", "i"])


def test_sign_batches_independent_of_batching_and_processes():
    texts = [" ".join(words(seed, 30)) for seed in range(40)] + ["学习编程最好的方法是每天动手写代码", "too short"]
    frame = pl.DataFrame({"text": texts, "lang": ["en"] * 40 + ["zh", "en"]})
    settings_ = SignatureSettings(num_perm=32)
    whole = sign_batches([frame], settings_)
    batched = sign_batches((frame.slice(start, 7) for start in range(0, frame.height, 7)), settings_, processes=2)
    assert np.array_equal(whole.signatures, batched.signatures)
    assert np.array_equal(whole.kinds, batched.kinds)
    assert [KIND_NAMES[code] for code in whole.kinds[-2:]] == ["char", "none"]


def test_signatures_reject_empty_set():
    with pytest.raises(ValueError, match="at least one shingle"):
        minhash_signatures([np.array([1], dtype=np.uint32), np.array([], dtype=np.uint32)], minhash_permutations(16, 1))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(st.sampled_from(VOCABULARY), min_size=5, max_size=60),
    st.lists(st.sampled_from(VOCABULARY), min_size=5, max_size=60),
)
def test_jaccard_estimate_close_to_exact(first_words, second_words):
    first = {tuple(first_words[i : i + 2]) for i in range(len(first_words) - 1)}
    second = {tuple(second_words[i : i + 2]) for i in range(len(second_words) - 1)}
    exact = len(first & second) / len(first | second)
    texts = pl.Series([" ".join(first_words), " ".join(second_words)])
    signed = sign_texts(texts, np.array([False, False]), SignatureSettings(word_shingle_size=2, num_perm=256, seed=11))
    estimate = estimated_jaccard(signed.signatures, np.array([0]), np.array([1]))[0]
    # Standard error is at most sqrt(0.25 / 256) = 0.031; 0.16 is five of them.
    assert abs(estimate - exact) <= 0.16


def test_short_text_has_no_signature():
    signed = sign_texts(pl.Series(["only four words here", "five words are here now"]), np.array([False, False]),
                        SignatureSettings())
    assert signed.kinds.tolist() == [0, 1]
    assert signed.signatures.shape == (1, 128)


def test_tokens_keep_indentation_of_code():
    assert tokens_of("for x in xs:\n    a(x)\nb()") == ["for", "x", "in", "xs", "    ", "a", "x", "b"]


def test_tokens_of_chinese_are_characters():
    assert tokens_of("学 好编程", chars=True) == ["学", "好", "编", "程"]


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("怎样学好编程", "en"),
        ("Use a virtual environment.", "en"),
        ("Use numpy: 数组", None),
        ("ภาษาไทย is here", None),
        ("12345 !!!", None),
        ("日本語のテキストです", None),
        ("Short text", "zh"),
    ],
)
def test_char_mask_matches_language_rule(text, lang):
    assert char_shingle_mask(pl.Series([text]), pl.Series([lang], dtype=pl.String))[0] == uses_char_shingles(lang, text)


def test_candidate_pairs_find_identical_signatures():
    signatures = np.array([[1, 2, 3, 4], [9, 9, 9, 9], [1, 2, 3, 4]], dtype=np.uint32)
    assert candidate_pairs(signatures, bands=2, rows=2).tolist() == [[0, 2]]


def test_candidate_pairs_large_bucket_pairs_with_lowest():
    signatures = np.zeros((5, 4), dtype=np.uint32)
    pairs = candidate_pairs(signatures, bands=2, rows=2, max_bucket_size=3)
    assert pairs.tolist() == [[0, 1], [0, 2], [0, 3], [0, 4]]


def test_lsh_parameters_for_default_threshold():
    bands, rows = lsh_parameters(0.5, 128)
    assert (bands, rows) == (42, 3)
    assert candidate_probability(0.5, bands, rows) >= 0.98


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.85])
def test_lsh_parameters_fit_permutations(threshold):
    bands, rows = lsh_parameters(threshold, 128)
    assert bands * rows <= 128
    assert candidate_probability(threshold, bands, rows) >= 0.98


def test_expected_word_jaccard_at_five_percent():
    assert expected_word_jaccard(0.05, 5) == pytest.approx(0.632, abs=0.001)


def test_shingle_hashes_type():
    shingles = ShingleHashes(np.array([1, 2], dtype=np.uint32), np.array([0, 2]))
    assert shingles.counts.tolist() == [2]


TRICKY_TEXTS = [
    "Use a\u00a0virtual environ\u200bment for each project\uff0e",
    "\ufeffUse a  virtual environment\r\nfor each project.",
    "co\u00adoperate\u2060 now \uff11\uff12",
    "学习编程\u3000最好，遇到问题先查文档。",
    "```python\nfor x in xs:\n    a(x)\n    b()\n```",
    "Try  this:\r\n```\n  x = 1\n```\nIt   works.",
    "  leading spaces and trailing tabs\t\t",
    "ﬁne ligatures and Ⅻ numerals",
]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_shingle_texts_tokenize_like_dedup_keys(text):
    """The batch normalization gives the same tokens as the per-sample exact-dedup key."""
    from filters.normalize import dedup_key

    batch_texts, multiline = shingle_texts(pl.Series([text]))
    key = dedup_key(text)
    for chars in (False, True):
        batch_tokens = token_lists(batch_texts, np.array([chars]), multiline).to_list()[0]
        assert batch_tokens == tokens_of(key, chars)
