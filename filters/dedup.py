"""Exact dedup on normalized keys and MinHash near-dedup with verified LSH candidates.

Both steps dedup across sources and pick one survivor per cluster with the same rule:
``quality_then_id`` (highest ``quality_score``, ties to the lowest ``sample_id`` in string order) or
``lowest_id``. Every step is independent of row order and of ``PYTHONHASHSEED``: shingles are
hashed with xxh32 and the permutations come from a seeded numpy generator.

Near-dedup in short:

1. Shingle the dedup key of each response: word n-grams (default 5) for spaced languages,
   character n-grams (default 3, whitespace removed) for Chinese, Japanese, Thai and similar,
   decided per sample by ``filters.lang.uses_char_shingles``. A response with fewer tokens than
   the shingle size has no signature and is left to exact dedup, so short texts never share an
   empty signature.
2. MinHash signatures in numpy, identical to datasketch 2.0's default ``affine32`` scheme with
   ``hashfunc=xxhash.xxh32_intdigest``, so ``LeanMinHash(seed=seed, hashvalues=row,
   scheme="affine32")`` gives the same Jaccard estimates.
3. LSH with ``bands`` x ``rows``: band hashes grouped in polars give candidate pairs.
4. Each candidate pair is verified: the estimated Jaccard of the responses AND of the prompts must
   both reach ``threshold``. Requiring the prompt and the response to match separately stops a
   long shared prompt template from merging different problems, because their responses differ.
5. Connected components (union-find) over verified edges only.

Choosing bands and rows: a pair with Jaccard ``s`` becomes a candidate with probability
``1 - (1 - s**rows) ** bands``. With 32 bands of 4 rows (128 permutations) that is 0.87 at
s = 0.5, 0.998 at s = 0.65 and 0.23 at s = 0.3, and the curve's midpoint ``(1 / bands) ** (1 / rows)``
is 0.42, below the default threshold, so recall near the threshold is high and verification
removes the extra candidates. Editing a share ``e`` of the words leaves a word-5-gram Jaccard of
about ``s / (2 - s)`` with ``s = (1 - e) ** 5``: about 0.63 at e = 5%, which a threshold of 0.5 catches.
"""

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl
import xxhash

from filters.lang import CHAR_SHINGLE_LANGS, uses_char_shingles
from filters.normalize import dedup_key
from filters.schema import StageResult, empty_ledger, ledger_rows

log = logging.getLogger(__name__)

SURVIVOR_RULES = ("quality_then_id", "lowest_id")

CLUSTER_SCHEMA: dict[str, pl.DataType] = {
    "cluster_id": pl.String,
    "kind": pl.String,
    "sample_id": pl.String,
    "is_survivor": pl.Boolean,
    "survivor_id": pl.String,
    "similarity": pl.Float64,
}

# Murmur3's 32-bit finalizer, the fixed bijection datasketch applies to each input hash before
# the affine permutations of its "affine32" scheme.
_FMIX32_SHIFTS_AND_MULTIPLIERS = (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)
_WORD_TOKEN = re.compile(r"\w+")


@dataclass(frozen=True)
class DedupConfig:
    """Settings of exact and near dedup. See the module docstring for how bands and rows were chosen."""

    near_duplicate_threshold: float = 0.5
    num_perm: int = 128
    bands: int = 32
    rows: int = 4
    word_shingle_size: int = 5
    char_shingle_size: int = 3
    seed: int = 1
    survivor_rule: str = "quality_then_id"
    batch_shingles: int = 131_072
    max_bucket_size: int = 64

    def __post_init__(self) -> None:
        if not 0.0 < self.near_duplicate_threshold <= 1.0:
            raise ValueError(
                f"near_duplicate_threshold={self.near_duplicate_threshold} is invalid: it must be in (0, 1]; "
                "0.5 catches texts with about 5% of their words edited."
            )
        if not 16 <= self.num_perm <= 1024:
            raise ValueError(f"num_perm={self.num_perm} is invalid: use 16 to 1024 permutations (default 128).")
        if self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm:
            raise ValueError(
                f"bands={self.bands} x rows={self.rows} is invalid: both must be at least 1 and their product "
                f"at most num_perm={self.num_perm}; the default is 32 x 4 for 128 permutations."
            )
        if not 1 <= self.word_shingle_size <= 20:
            raise ValueError(f"word_shingle_size={self.word_shingle_size} is invalid: use 1 to 20 words (default 5).")
        if not 1 <= self.char_shingle_size <= 20:
            raise ValueError(
                f"char_shingle_size={self.char_shingle_size} is invalid: use 1 to 20 characters (default 3)."
            )
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed={self.seed} is invalid: it must be in [0, 2**32).")
        if self.survivor_rule not in SURVIVOR_RULES:
            raise ValueError(f"survivor_rule={self.survivor_rule!r} is invalid: use one of {list(SURVIVOR_RULES)}.")
        if self.batch_shingles < 1024:
            raise ValueError(f"batch_shingles={self.batch_shingles} is invalid: use at least 1024.")
        if self.max_bucket_size < 2:
            raise ValueError(f"max_bucket_size={self.max_bucket_size} is invalid: it must be at least 2.")


# ---------------------------------------------------------------------------------------------
# Shingles and signatures


def _uses_char_shingles(lang: str | None, text: str) -> bool:
    # ASCII text has no Han, kana or Thai, so the per-character script count can be skipped.
    if lang not in CHAR_SHINGLE_LANGS and text.isascii():
        return False
    return uses_char_shingles(lang, text)


def shingle_kind(lang: str | None, text: str, word_size: int, char_size: int) -> str:
    """Return ``"char"``, ``"word"`` or ``"none"`` (too few tokens for one shingle) for ``text``."""
    if _uses_char_shingles(lang, text):
        return "char" if len(_char_tokens(text)) >= char_size else "none"
    return "word" if len(_word_tokens(text)) >= word_size else "none"


def _word_tokens(text: str) -> list[str]:
    if "\n" not in text:
        return _WORD_TOKEN.findall(text.casefold())
    # Only code keeps its lines in a dedup key. An indentation token per indented line keeps
    # programs that differ only in indentation from having identical shingle sets.
    tokens: list[str] = []
    for line in text.casefold().split("\n"):
        indent = len(line) - len(line.lstrip(" \t"))
        if indent and line.strip():
            tokens.append(f"\x00indent{indent}")
        tokens.extend(_WORD_TOKEN.findall(line))
    return tokens


def _char_tokens(text: str) -> str:
    return "".join(text.casefold().split())


def shingles(text: str, kind: str, size: int) -> list[str]:
    """Return the shingles of ``text``: word n-grams joined by one space, or character n-grams.

    ``text`` should already be a dedup key (NFKC, no format characters). Words are ``\\w+`` runs
    after casefolding, so punctuation is dropped, plus one indentation token per indented line of
    code; character shingles keep punctuation and drop whitespace. Fewer tokens than ``size`` give an empty list, never one short shingle.
    """
    if kind == "char":
        chars = _char_tokens(text)
        return [chars[i : i + size] for i in range(len(chars) - size + 1)]
    if kind == "word":
        words = _word_tokens(text)
        return [" ".join(words[i : i + size]) for i in range(len(words) - size + 1)]
    return []


def shingle_hashes(shingle_list: Iterable[str]) -> np.ndarray:
    """Hash shingles to uint32 with xxh32 (seed 0) of their UTF-8 bytes."""
    intdigest = xxhash.xxh32_intdigest
    return np.fromiter((intdigest(s.encode("utf-8")) for s in shingle_list), dtype=np.uint32)


def minhash_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``(a, b)`` uint32 arrays of datasketch's ``affine32`` permutations for ``seed``.

    Like datasketch 2.0, ``a`` is odd and drawn with ``numpy.random.RandomState(seed)``, and ``b``
    is uniform below 2**32, so each permutation ``a * h + b mod 2**32`` is a bijection.
    """
    generator = np.random.RandomState(seed)
    a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _fmix32(values: np.ndarray) -> np.ndarray:
    shift1, mult1, shift2, mult2, shift3 = _FMIX32_SHIFTS_AND_MULTIPLIERS
    values = values ^ (values >> np.uint32(shift1))
    values = values * np.uint32(mult1)
    values = values ^ (values >> np.uint32(shift2))
    values = values * np.uint32(mult2)
    return values ^ (values >> np.uint32(shift3))


def minhash_signatures(
    hash_lists: list[np.ndarray], permutations: tuple[np.ndarray, np.ndarray], batch_shingles: int = 131_072
) -> np.ndarray:
    """Return MinHash signatures, shape ``(len(hash_lists), num_perm)`` uint32, one row per shingle set.

    Every set must be non-empty: a text without shingles has no signature. Rows are computed in
    batches of about ``batch_shingles`` shingles, so peak memory is about
    ``batch_shingles * num_perm * 4`` bytes whatever the number of documents.
    """
    a, b = permutations
    num_perm = a.shape[0]
    lengths = np.fromiter((h.shape[0] for h in hash_lists), dtype=np.int64, count=len(hash_lists))
    if lengths.size and lengths.min() == 0:
        raise ValueError("every shingle set must be non-empty; leave texts without shingles out of MinHash")
    signatures = np.empty((len(hash_lists), num_perm), dtype=np.uint32)
    start = 0
    while start < len(hash_lists):
        stop = start + 1
        total = lengths[start]
        while stop < len(hash_lists) and total + lengths[stop] <= batch_shingles:
            total += lengths[stop]
            stop += 1
        mixed = _fmix32(np.concatenate(hash_lists[start:stop]))
        # Permutations along rows and shingles along columns: reduceat over contiguous runs of
        # each row is about 50 times faster than over rows of a (shingles, num_perm) array.
        permuted = np.multiply.outer(a, mixed)
        permuted += b[:, None]
        offsets = np.concatenate(([0], np.cumsum(lengths[start:stop])[:-1]))
        signatures[start:stop] = np.minimum.reduceat(permuted, offsets, axis=1).T
        start = stop
    return signatures


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Return one uint64 hash per (document, band), shape ``(n, bands)``.

    A collision of two different bands only adds a candidate pair, which verification drops.
    """
    banded = signatures[:, : bands * rows].reshape(signatures.shape[0], bands, rows).astype(np.uint64)
    keys = np.full(banded.shape[:2], np.uint64(0xCBF29CE484222325), dtype=np.uint64)
    for row in range(rows):
        keys = (keys ^ banded[:, :, row]) * np.uint64(0x100000001B3)
        keys ^= keys >> np.uint64(29)
    return keys


def candidate_pairs(signatures: np.ndarray, bands: int, rows: int, max_bucket_size: int = 64) -> np.ndarray:
    """Return unique candidate pairs ``(i, j)`` with ``i < j`` that share at least one band hash.

    A bucket with more than ``max_bucket_size`` members contributes only the pairs of each member
    with the bucket's lowest index, so one huge bucket cannot produce a quadratic number of pairs.
    NOTE: in such a bucket two members similar to each other but not to the lowest member are
    linked only if another band pairs them.
    """
    count = signatures.shape[0]
    if count < 2:
        return np.empty((0, 2), dtype=np.int64)
    keys = band_hashes(signatures, bands, rows)
    frame = pl.DataFrame(
        {
            "doc": np.repeat(np.arange(count, dtype=np.int64), bands),
            "band": np.tile(np.arange(bands, dtype=np.int32), count),
            "key": keys.reshape(-1),
        }
    )
    buckets = (
        frame.group_by("band", "key")
        .agg(pl.col("doc").sort().alias("docs"))
        .filter(pl.col("docs").list.len() >= 2)
        .with_row_index("bucket")
    )
    if buckets.height == 0:
        return np.empty((0, 2), dtype=np.int64)
    small = buckets.filter(pl.col("docs").list.len() <= max_bucket_size)
    large = buckets.filter(pl.col("docs").list.len() > max_bucket_size)

    members = small.select("bucket", "docs").explode("docs")
    pairs_small = (
        members.join(members, on="bucket", suffix="_right")
        .filter(pl.col("docs") < pl.col("docs_right"))
        .select(pl.col("docs").alias("left"), pl.col("docs_right").alias("right"))
    )
    pairs_large = (
        large.select(pl.col("docs").list.first().alias("left"), pl.col("docs").list.slice(1).alias("right"))
        .explode("right")
    )
    pairs = pl.concat([pairs_small, pairs_large.cast(pairs_small.schema)]).unique().sort("left", "right")
    return pairs.to_numpy().astype(np.int64).reshape(-1, 2)


def estimated_jaccard(signatures: np.ndarray, left: np.ndarray, right: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Return the share of equal signature slots for each pair of rows ``left[k]``, ``right[k]``."""
    result = np.empty(left.shape[0], dtype=np.float64)
    for start in range(0, left.shape[0], chunk):
        stop = start + chunk
        result[start:stop] = (signatures[left[start:stop]] == signatures[right[start:stop]]).mean(axis=1)
    return result


# ---------------------------------------------------------------------------------------------
# Clusters and survivors


def _find(parent: list[int], node: int) -> int:
    root = node
    while parent[root] != root:
        root = parent[root]
    while parent[node] != root:
        parent[node], node = root, parent[node]
    return root


def connected_components(count: int, edges: np.ndarray) -> list[int]:
    """Return a component label per node: the lowest node index in its component."""
    parent = list(range(count))
    for left, right in edges.tolist():
        root_left, root_right = _find(parent, left), _find(parent, right)
        if root_left != root_right:
            parent[max(root_left, root_right)] = min(root_left, root_right)
    return [_find(parent, node) for node in range(count)]


def survivor_order(rule: str) -> tuple[list[str], list[bool]]:
    """Return polars sort columns and ``descending`` flags that put a cluster's survivor first."""
    if rule == "lowest_id":
        return ["sample_id"], [False]
    if rule == "quality_then_id":
        return ["quality_score", "sample_id"], [True, False]
    raise ValueError(f"survivor_rule={rule!r} is invalid: use one of {list(SURVIVOR_RULES)}.")


def _pick_survivors(members: pl.DataFrame, rule: str) -> pl.DataFrame:
    """Add ``survivor_id`` per ``group`` to ``members`` (columns group, sample_id, quality_score)."""
    columns, descending = survivor_order(rule)
    survivors = (
        members.sort(columns, descending=descending, nulls_last=True)
        .group_by("group", maintain_order=True)
        .agg(pl.col("sample_id").first().alias("survivor_id"))
    )
    return members.join(survivors, on="group")


def _apply_per_sample(function, *columns: Iterable) -> tuple[list, list[str | None], list[str | None]]:
    """Call ``function`` per row; return results and, per row, the error reason and message or None."""
    results: list = []
    reasons: list[str | None] = []
    messages: list[str | None] = []
    for values in zip(*columns, strict=True):
        try:
            results.append(function(*values))
            reasons.append(None)
            messages.append(None)
        except Exception as error:  # one bad sample becomes a ledger row, never a failed batch
            results.append(None)
            reasons.append(f"error_{type(error).__name__}")
            messages.append(str(error)[:500])
    return results, reasons, messages


def _error_ledger(samples: pl.DataFrame, reasons: list[str | None], messages: list[str | None], stage: str, filter_name: str):
    marked = samples.with_columns(
        pl.Series("_reason", reasons, dtype=pl.String), pl.Series("_message", messages, dtype=pl.String)
    )
    failed = marked.filter(pl.col("_reason").is_not_null())
    if failed.height == 0:
        return empty_ledger()
    return ledger_rows(
        failed, stage=stage, filter_name=filter_name, reason=pl.col("_reason"), detail=pl.col("_message")
    )


def _quality_column(samples: pl.DataFrame, rule: str) -> pl.Expr:
    if "quality_score" in samples.columns:
        return pl.col("quality_score").cast(pl.Float64)
    if rule == "quality_then_id":
        raise ValueError(
            "survivor_rule='quality_then_id' needs a quality_score column; run the quality rules first "
            "or use survivor_rule='lowest_id'."
        )
    return pl.lit(None, dtype=pl.Float64)


def _exact_key(prompt: str | None, response: str | None) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(dedup_key(prompt).encode("utf-8"))
    digest.update(b"\x1f")
    digest.update(dedup_key(response).encode("utf-8"))
    return digest.hexdigest()


def exact_dedup(samples: pl.DataFrame, survivor_rule: str = "quality_then_id", *, stage: str = "stage1") -> StageResult:
    """Remove samples whose ``(dedup_key(prompt), dedup_key(response))`` equals another sample's.

    Sources are ignored: a duplicate of a sample from another source is removed too. Each cluster
    keeps one survivor by ``survivor_rule``; the others get reason ``exact_duplicate`` with
    ``duplicate_of`` set to the survivor. ``tables["clusters"]`` lists clusters of two or more.
    """
    keys, reasons, messages = _apply_per_sample(_exact_key, samples["prompt"], samples["response"])
    errors = _error_ledger(samples, reasons, messages, stage, "exact_dedup")
    members = (
        samples.select("sample_id", _quality_column(samples, survivor_rule).alias("quality_score"))
        .with_columns(pl.Series("group", keys, dtype=pl.String), pl.Series("_reason", reasons, dtype=pl.String))
        .filter(pl.col("_reason").is_null())
        .drop("_reason")
    )
    members = members.filter(pl.len().over("group") >= 2)
    members = _pick_survivors(members, survivor_rule)

    losers = members.filter(pl.col("sample_id") != pl.col("survivor_id"))
    loser_rows = samples.join(losers.select("sample_id", "survivor_id"), on="sample_id")
    duplicates = ledger_rows(
        loser_rows,
        stage=stage,
        filter_name="exact_dedup",
        reason="exact_duplicate",
        duplicate_of=pl.col("survivor_id"),
        detail=pl.lit("same normalized prompt and response as ") + pl.col("survivor_id"),
    )
    clusters = members.select(
        (pl.lit("exact:") + pl.col("survivor_id")).alias("cluster_id"),
        pl.lit("exact").alias("kind"),
        "sample_id",
        (pl.col("sample_id") == pl.col("survivor_id")).alias("is_survivor"),
        "survivor_id",
        pl.lit(1.0, dtype=pl.Float64).alias("similarity"),
    ).sort("cluster_id", "sample_id")

    removed = set(losers["sample_id"].to_list()) | set(errors["sample_id"].to_list())
    kept = samples.filter(~pl.col("sample_id").is_in(list(removed)))
    rejected = pl.concat([errors, duplicates]) if errors.height else duplicates
    log.info(
        "exact dedup: %d in, %d kept, %d duplicates in %d clusters, %d errors",
        samples.height, kept.height, duplicates.height, clusters["cluster_id"].n_unique(), errors.height,
    )
    return StageResult(kept=kept, rejected=rejected, tables={"clusters": clusters.cast(CLUSTER_SCHEMA)}, rows_in=samples.height)


@dataclass(frozen=True)
class _Prepared:
    kind: str
    response_hashes: np.ndarray
    prompt_key: str


def _prepare(lang: str | None, prompt: str | None, response: str | None, config: DedupConfig) -> _Prepared:
    prompt_key = dedup_key(prompt)
    response_key = dedup_key(response)
    kind = "char" if _uses_char_shingles(lang, prompt_key + "\n" + response_key) else "word"
    size = config.char_shingle_size if kind == "char" else config.word_shingle_size
    hashes = shingle_hashes(shingles(response_key, kind, size))
    return _Prepared("none" if hashes.size == 0 else kind, hashes, prompt_key)


def _prompt_signatures(
    prepared: list[_Prepared], config: DedupConfig, permutations: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sign each distinct (prompt key, kind) once.

    Returns per sample the prompt group id and the row in the prompt signature matrix (-1 when
    the prompt has fewer tokens than one shingle), and the signature matrix itself.
    """
    groups: dict[tuple[str, str], int] = {}
    group_ids = np.empty(len(prepared), dtype=np.int64)
    for index, item in enumerate(prepared):
        group_ids[index] = groups.setdefault((item.prompt_key, item.kind), len(groups))
    hash_lists = []
    row_of_group = np.full(len(groups), -1, dtype=np.int64)
    for (prompt_key, kind), group in groups.items():
        size = config.char_shingle_size if kind == "char" else config.word_shingle_size
        hashes = shingle_hashes(shingles(prompt_key, kind, size))
        if hashes.size:
            row_of_group[group] = len(hash_lists)
            hash_lists.append(hashes)
    signatures = minhash_signatures(hash_lists, permutations, config.batch_shingles)
    return group_ids, row_of_group[group_ids], signatures


def _pair_similarity(
    pairs: np.ndarray,
    response_signatures: np.ndarray,
    prompt_groups: np.ndarray,
    prompt_rows: np.ndarray,
    prompt_signatures: np.ndarray,
) -> np.ndarray:
    """Return min(response Jaccard, prompt Jaccard) per pair, both estimated from signatures.

    A prompt too short to shingle matches only a prompt with the same dedup key (1.0, else 0.0).
    """
    left, right = pairs[:, 0], pairs[:, 1]
    response_similarity = estimated_jaccard(response_signatures, left, right)
    prompt_similarity = (prompt_groups[left] == prompt_groups[right]).astype(np.float64)
    both_signed = (prompt_rows[left] >= 0) & (prompt_rows[right] >= 0)
    if both_signed.any():
        prompt_similarity[both_signed] = estimated_jaccard(
            prompt_signatures, prompt_rows[left][both_signed], prompt_rows[right][both_signed]
        )
    return np.minimum(response_similarity, prompt_similarity)


def near_dedup(samples: pl.DataFrame, config: DedupConfig, *, stage: str = "stage1") -> StageResult:
    """Remove near duplicates found with MinHash LSH and add ``shingle_kind`` to kept rows.

    Two samples are linked when the estimated Jaccard of their response shingles and of their
    prompt shingles are both at least ``config.near_duplicate_threshold``. Each connected
    component keeps one survivor by ``config.survivor_rule``; the others get reason
    ``near_duplicate`` with ``score`` = their highest linking similarity. ``tables["clusters"]``
    has one row per member with ``similarity`` = the estimated similarity to the survivor.
    Samples whose response is shorter than one shingle (``shingle_kind == "none"``) are skipped.
    """
    quality = _quality_column(samples, config.survivor_rule)
    work = samples.select(
        "sample_id", "source", "task", "lang", "prompt", "response", quality.alias("quality_score")
    ).sort("sample_id")
    prepared, reasons, messages = _apply_per_sample(
        lambda lang, prompt, response: _prepare(lang, prompt, response, config),
        work["lang"], work["prompt"], work["response"],
    )
    errors = _error_ledger(work, reasons, messages, stage, "near_dedup")
    kinds = pl.DataFrame(
        {"sample_id": work["sample_id"], "shingle_kind": [item.kind if item else None for item in prepared]},
        schema={"sample_id": pl.String, "shingle_kind": pl.String},
    )
    signed = [index for index, item in enumerate(prepared) if item is not None and item.kind != "none"]
    signed_items = [prepared[index] for index in signed]
    signed_ids = work["sample_id"].gather(signed) if signed else pl.Series("sample_id", [], dtype=pl.String)

    permutations = minhash_permutations(config.num_perm, config.seed)
    response_signatures = minhash_signatures(
        [item.response_hashes for item in signed_items], permutations, config.batch_shingles
    )
    prompt_groups, prompt_rows, prompt_signatures = _prompt_signatures(signed_items, config, permutations)

    pairs = candidate_pairs(response_signatures, config.bands, config.rows, config.max_bucket_size)
    same_kind = np.array([signed_items[l].kind == signed_items[r].kind for l, r in pairs.tolist()], dtype=bool)
    pairs = pairs[same_kind] if pairs.size else pairs
    similarity = _pair_similarity(pairs, response_signatures, prompt_groups, prompt_rows, prompt_signatures)
    verified = similarity >= config.near_duplicate_threshold
    edges, edge_similarity = pairs[verified], similarity[verified]
    log.info(
        "near dedup: %d in, %d signed, %d candidate pairs, %d verified",
        samples.height, len(signed_items), pairs.shape[0], edges.shape[0],
    )

    clusters, duplicates = _near_clusters(
        work, signed, signed_ids, edges, edge_similarity, response_signatures,
        prompt_groups, prompt_rows, prompt_signatures, config, stage,
    )
    removed = set(duplicates["sample_id"].to_list()) | set(errors["sample_id"].to_list())
    kept = samples.filter(~pl.col("sample_id").is_in(list(removed))).join(
        kinds, on="sample_id", how="left", maintain_order="left"
    )
    rejected = pl.concat([errors, duplicates]) if errors.height else duplicates
    log.info(
        "near dedup: %d kept, %d duplicates in %d clusters, %d errors",
        kept.height, duplicates.height, clusters["cluster_id"].n_unique(), errors.height,
    )
    return StageResult(kept=kept, rejected=rejected, tables={"clusters": clusters}, rows_in=samples.height)


def _near_clusters(
    work, signed, signed_ids, edges, edge_similarity, response_signatures,
    prompt_groups, prompt_rows, prompt_signatures, config, stage,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Group verified edges into clusters, pick survivors, and build the cluster table and ledger rows."""
    labels = connected_components(len(signed), edges)
    members = pl.DataFrame(
        {
            "node": np.arange(len(signed), dtype=np.int64),
            "sample_id": signed_ids,
            "quality_score": work["quality_score"].gather(signed) if signed else [],
            "group": labels,
        },
        schema={"node": pl.Int64, "sample_id": pl.String, "quality_score": pl.Float64, "group": pl.Int64},
    ).filter(pl.len().over("group") >= 2)
    if members.height == 0:
        return pl.DataFrame(schema=CLUSTER_SCHEMA), empty_ledger()
    members = _pick_survivors(members, config.survivor_rule)
    survivor_node = members.filter(pl.col("sample_id") == pl.col("survivor_id")).select(
        "group", pl.col("node").alias("survivor_node")
    )
    members = members.join(survivor_node, on="group").sort("sample_id")

    pairs_to_survivor = members.select("node", "survivor_node").to_numpy().astype(np.int64).reshape(-1, 2)
    to_survivor = _pair_similarity(
        pairs_to_survivor, response_signatures, prompt_groups, prompt_rows, prompt_signatures
    )
    members = members.with_columns(pl.Series("similarity", to_survivor, dtype=pl.Float64))
    incident = pl.DataFrame(
        {
            "node": np.concatenate([edges[:, 0], edges[:, 1]]).astype(np.int64),
            "best_edge": np.concatenate([edge_similarity, edge_similarity]),
        },
        schema={"node": pl.Int64, "best_edge": pl.Float64},
    ).group_by("node").agg(pl.col("best_edge").max())
    members = members.join(incident, on="node", how="left")

    clusters = members.select(
        (pl.lit("near:") + pl.col("survivor_id")).alias("cluster_id"),
        pl.lit("near").alias("kind"),
        "sample_id",
        (pl.col("sample_id") == pl.col("survivor_id")).alias("is_survivor"),
        "survivor_id",
        pl.when(pl.col("sample_id") == pl.col("survivor_id")).then(1.0).otherwise(pl.col("similarity")).alias("similarity"),
    ).sort("cluster_id", "sample_id").cast(CLUSTER_SCHEMA)

    losers = members.filter(pl.col("sample_id") != pl.col("survivor_id"))
    loser_rows = work.join(losers.select("sample_id", "survivor_id", "similarity", "best_edge"), on="sample_id")
    duplicates = ledger_rows(
        loser_rows,
        stage=stage,
        filter_name="near_dedup",
        reason="near_duplicate",
        score=pl.col("best_edge"),
        threshold=config.near_duplicate_threshold,
        duplicate_of=pl.col("survivor_id"),
        detail=pl.format(
            "estimated Jaccard to {}: {} (lower of prompt and response)",
            pl.col("survivor_id"),
            pl.col("similarity").round(3),
        ),
    )
    return clusters, duplicates
