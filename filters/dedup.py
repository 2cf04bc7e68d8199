"""Exact dedup on normalized keys and MinHash near-dedup with verified LSH candidates.

Both steps dedup across sources and pick one survivor per cluster with the same rule:
``quality_then_id`` (highest ``quality_score``, ties to the lowest ``sample_id`` in string order) or
``lowest_id``. Every step is independent of row order, of batching and of ``PYTHONHASHSEED``:
rows are sorted by ``sample_id`` first, shingles are hashed with a fixed seed and the
permutations come from a seeded numpy generator.

Near-dedup in short:

1. Shingle the dedup key of each response (``filters.minhash``): word 5-grams for spaced
   languages, character 3-grams (whitespace removed) for Chinese, Japanese, Thai and similar,
   decided per sample. A response with fewer tokens than the shingle size has no signature and is
   left to exact dedup, so short texts never share an empty signature.
2. MinHash signatures computed over whole batches in numpy, interchangeable with datasketch's
   ``LeanMinHash`` (``affine32`` scheme).
3. LSH: band hashes grouped in polars, one band at a time, give candidate pairs. ``bands`` and
   ``rows`` default to ``filters.minhash.lsh_parameters(threshold, num_perm)``: 42 x 3 for the
   default threshold 0.5 and 128 permutations, which makes a pair at Jaccard 0.5 a candidate with
   probability 0.996.
4. Each candidate pair is verified: the estimated Jaccard of the responses AND of the prompts must
   both reach ``threshold``. Requiring the prompt and the response to match separately stops a
   long shared prompt template from merging different problems, because their responses differ.
   Two samples whose keys differ only in whitespace are never linked: after exact dedup that
   means code that differs in indentation or line breaks, which are different programs.
5. Connected components over verified edges only.

Threshold and edit rate: replacing a share ``e`` of the words leaves a word-5-gram Jaccard of about
``s / (2 - s)`` with ``s = (1 - e) ** 5`` (``filters.minhash.expected_word_jaccard``): 0.90 at
e = 1%, 0.63 at 5% and 0.42 at 10%. The default threshold 0.5 catches edits up to about 7% of
the words.
"""

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as _scipy_components

from filters.minhash import (
    DEFAULT_BATCH_SHINGLES,
    KIND_NAMES,
    SignatureSettings,
    candidate_pairs,
    char_shingle_mask,
    estimated_jaccard,
    lsh_parameters,
    sign_batches,
    sign_texts,
)
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


@dataclass(frozen=True)
class DedupConfig:
    """Settings of exact and near dedup; see the module docstring for the defaults.

    ``bands`` and ``rows`` left as ``None`` are derived from the threshold and ``num_perm``.
    ``processes`` > 1 signs responses in that many worker processes, in batches of
    ``batch_documents``; results do not depend on either.
    """

    near_duplicate_threshold: float = 0.5
    num_perm: int = 128
    bands: int | None = None
    rows: int | None = None
    word_shingle_size: int = 5
    char_shingle_size: int = 3
    seed: int = 1
    survivor_rule: str = "quality_then_id"
    batch_shingles: int = DEFAULT_BATCH_SHINGLES
    max_bucket_size: int = 64
    processes: int = 1
    batch_documents: int = 20_000

    def __post_init__(self) -> None:
        if not 0.0 < self.near_duplicate_threshold <= 1.0:
            raise ValueError(
                f"near_duplicate_threshold={self.near_duplicate_threshold} is invalid: it must be in (0, 1]; "
                "0.5 catches texts with up to about 7% of their words edited."
            )
        if not 16 <= self.num_perm <= 1024:
            raise ValueError(f"num_perm={self.num_perm} is invalid: use 16 to 1024 permutations (default 128).")
        if self.bands is None or self.rows is None:
            bands, rows = lsh_parameters(self.near_duplicate_threshold, self.num_perm)
            object.__setattr__(self, "bands", self.bands or bands)
            object.__setattr__(self, "rows", self.rows or rows)
        if self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm:
            raise ValueError(
                f"bands={self.bands} x rows={self.rows} is invalid: both must be at least 1 and their product "
                f"at most num_perm={self.num_perm}; leave both unset to derive them from the threshold."
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
        if not 1 <= self.processes <= 64:
            raise ValueError(f"processes={self.processes} is invalid: use 1 to 64 worker processes (default 1).")
        if self.batch_documents < 1:
            raise ValueError(f"batch_documents={self.batch_documents} is invalid: it must be at least 1.")

    def signature_settings(self) -> SignatureSettings:
        return SignatureSettings(
            word_shingle_size=self.word_shingle_size,
            char_shingle_size=self.char_shingle_size,
            num_perm=self.num_perm,
            seed=self.seed,
            batch_shingles=self.batch_shingles,
        )


# ---------------------------------------------------------------------------------------------
# Clusters and survivors


def connected_components(count: int, edges: np.ndarray) -> np.ndarray:
    """Return a component label per node: the lowest node index in its component."""
    if count == 0:
        return np.empty(0, dtype=np.int64)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(edges.shape[0], dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(count, count))
    _, component = _scipy_components(graph, directed=False)
    lowest = np.full(component.max() + 1, count, dtype=np.int64)
    np.minimum.at(lowest, component, np.arange(count, dtype=np.int64))
    return lowest[component]


def verified_edges(signatures: np.ndarray, kinds: np.ndarray, config: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """Return the candidate pairs of signature rows whose estimated Jaccard reaches the threshold.

    ``kinds`` contains one shingle-kind code per row, and rows of different kinds are never compared.
    Returns the pairs ``(i, j)``, ``i < j``, and their estimated Jaccard.
    """
    pairs = candidate_pairs(signatures, config.bands, config.rows, config.max_bucket_size)
    pairs = pairs[kinds[pairs[:, 0]] == kinds[pairs[:, 1]]]
    similarity = estimated_jaccard(signatures, pairs[:, 0], pairs[:, 1])
    verified = similarity >= config.near_duplicate_threshold
    return pairs[verified], similarity[verified]


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


def _prompt_signatures(
    prompt_keys: pl.Series, use_chars: np.ndarray, config: DedupConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sign each distinct (prompt key, shingle kind) once.

    Returns per sample the prompt group id and the row in the prompt signature matrix (-1 when
    the prompt has fewer tokens than one shingle), and the signature matrix itself.
    """
    frame = pl.DataFrame({"prompt_key": prompt_keys, "chars": use_chars})
    distinct = frame.unique(maintain_order=True).with_row_index("group")
    groups = frame.join(distinct, on=["prompt_key", "chars"], how="left", maintain_order="left")["group"]
    group_ids = groups.to_numpy().astype(np.int64)
    signed = sign_texts(distinct["prompt_key"], distinct["chars"].to_numpy(), config.signature_settings())
    row_of_group = np.where(signed.kinds > 0, np.cumsum(signed.kinds > 0) - 1, -1)
    return group_ids, row_of_group[group_ids], signed.signatures


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


def _layout_hashes(prompt_keys: pl.Series, response_keys: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Return per sample a hash of its keys and a hash of its keys with all whitespace removed."""
    frame = pl.DataFrame({"prompt": prompt_keys, "response": response_keys})
    joined = pl.concat_str("prompt", pl.lit("\x1f"), "response")
    hashes = frame.select(
        joined.hash(seed=0).alias("exact"), joined.str.replace_all(r"\s+", "").hash(seed=0).alias("layout_free")
    )
    return hashes["exact"].to_numpy(), hashes["layout_free"].to_numpy()


def _sign_responses(response_keys: pl.Series, use_chars: np.ndarray, config: DedupConfig):
    settings = config.signature_settings()
    if config.processes <= 1 or response_keys.len() <= config.batch_documents:
        return sign_texts(response_keys, use_chars, settings)
    # The shingle kind was chosen from the prompt and the response together, so it is passed on.
    frame = pl.DataFrame({"text": response_keys, "use_chars": use_chars})
    batches = (frame.slice(start, config.batch_documents) for start in range(0, frame.height, config.batch_documents))
    return sign_batches(batches, settings, processes=config.processes, normalize=False)


def near_dedup(samples: pl.DataFrame, config: DedupConfig, *, stage: str = "stage1") -> StageResult:
    """Remove near duplicates found with MinHash LSH and add ``shingle_kind`` to kept rows.

    Two samples are linked when the estimated Jaccard of their response shingles and of their
    prompt shingles are both at least ``config.near_duplicate_threshold``, unless their keys
    differ only in whitespace. Each connected component keeps one survivor by
    ``config.survivor_rule``; the others get reason ``near_duplicate`` with ``score`` = their
    highest linking similarity. ``tables["clusters"]`` has one row per member with
    ``similarity`` = the estimated similarity to the survivor. Samples whose response is shorter
    than one shingle (``shingle_kind == "none"``) are skipped.
    """
    quality = _quality_column(samples, config.survivor_rule)
    work = samples.select(
        "sample_id", "source", "task", "lang", "prompt", "response", quality.alias("quality_score")
    ).sort("sample_id")
    keys, reasons, messages = _apply_per_sample(
        lambda prompt, response: (dedup_key(prompt), dedup_key(response)), work["prompt"], work["response"]
    )
    errors = _error_ledger(work, reasons, messages, stage, "near_dedup")
    good_rows = [index for index, reason in enumerate(reasons) if reason is None]
    work = work[good_rows]
    prompt_keys = pl.Series("prompt_key", [keys[index][0] for index in good_rows], dtype=pl.String)
    response_keys = pl.Series("response_key", [keys[index][1] for index in good_rows], dtype=pl.String)

    use_chars = char_shingle_mask(prompt_keys + "\n" + response_keys, work["lang"])
    responses = _sign_responses(response_keys, use_chars, config)
    kinds = pl.DataFrame(
        {"sample_id": work["sample_id"], "shingle_kind": np.array(KIND_NAMES)[responses.kinds]},
        schema={"sample_id": pl.String, "shingle_kind": pl.String},
    )
    signed = responses.signed
    signed_ids = work["sample_id"].gather(signed)
    prompt_groups, prompt_rows, prompt_signatures = _prompt_signatures(
        prompt_keys.gather(signed), use_chars[signed], config
    )
    exact_hash, layout_free_hash = (values[signed] for values in _layout_hashes(prompt_keys, response_keys))

    pairs = candidate_pairs(responses.signatures, config.bands, config.rows, config.max_bucket_size)
    signed_kinds = responses.kinds[signed]
    left, right = pairs[:, 0], pairs[:, 1]
    pairs = pairs[signed_kinds[left] == signed_kinds[right]]
    similarity = _pair_similarity(pairs, responses.signatures, prompt_groups, prompt_rows, prompt_signatures)
    left, right = pairs[:, 0], pairs[:, 1]
    layout_only = (layout_free_hash[left] == layout_free_hash[right]) & (exact_hash[left] != exact_hash[right])
    verified = (similarity >= config.near_duplicate_threshold) & ~layout_only
    edges, edge_similarity = pairs[verified], similarity[verified]
    log.info(
        "near dedup: %d in, %d signed, %d candidate pairs, %d verified, %d layout-only variants kept apart",
        samples.height, signed.shape[0], pairs.shape[0], edges.shape[0], int(layout_only.sum()),
    )

    clusters, duplicates = _near_clusters(
        work, signed, signed_ids, edges, edge_similarity, responses.signatures,
        prompt_groups, prompt_rows, prompt_signatures, exact_hash, layout_free_hash, config, stage,
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


def _survivor_ranks(members: pl.DataFrame, rule: str) -> np.ndarray:
    """Return each row's position in survivor order (0 = first choice) for rows with ``node``."""
    columns, descending = survivor_order(rule)
    ordered = members.sort(columns, descending=descending, nulls_last=True)["node"].to_numpy()
    ranks = np.empty(members.height, dtype=np.int64)
    ranks[ordered] = np.arange(members.height)
    return ranks


def _separate_layout_variants(
    labels: np.ndarray, edges: np.ndarray, exact_hash: np.ndarray, layout_free_hash: np.ndarray, ranks: np.ndarray
) -> np.ndarray:
    """Split components that would hold two samples whose keys differ only in whitespace.

    Such samples are never linked directly, but a third sample similar to both would join them.
    In an affected component, members are placed in survivor order: each joins the cluster of its
    first placed neighbour (in survivor order) that contains no whitespace variant of it, or starts
    a new cluster. Labels stay the lowest node index of each cluster.
    """
    frame = pl.DataFrame({"label": labels, "layout": layout_free_hash, "exact": exact_hash})
    conflicted = (
        frame.group_by("label", "layout")
        .agg(pl.col("exact").n_unique().alias("variants"))
        .filter(pl.col("variants") > 1)["label"]
        .unique()
        .to_numpy()
    )
    if conflicted.size == 0:
        return labels
    labels = labels.copy()
    affected = np.isin(labels, conflicted)
    neighbours: dict[int, list[int]] = {}
    for left, right in edges[affected[edges[:, 0]]].tolist():
        neighbours.setdefault(left, []).append(right)
        neighbours.setdefault(right, []).append(left)
    for label in sorted(conflicted.tolist()):
        members = sorted(np.flatnonzero(labels == label).tolist(), key=lambda node: ranks[node])
        cluster_of: dict[int, int] = {}
        variants_in: dict[int, dict[int, int]] = {}  # cluster -> layout-free hash -> exact hash
        for node in members:
            placed = sorted((n for n in neighbours.get(node, []) if n in cluster_of), key=lambda n: ranks[n])
            target = None
            for neighbour in placed:
                seen = variants_in[cluster_of[neighbour]].get(int(layout_free_hash[node]))
                if seen is None or seen == int(exact_hash[node]):
                    target = cluster_of[neighbour]
                    break
            if target is None:
                target = node
                variants_in[target] = {}
            cluster_of[node] = target
            variants_in[target][int(layout_free_hash[node])] = int(exact_hash[node])
        clusters: dict[int, list[int]] = {}
        for node, cluster in cluster_of.items():
            clusters.setdefault(cluster, []).append(node)
        for nodes in clusters.values():
            labels[nodes] = min(nodes)
    return labels


def _near_clusters(
    work, signed, signed_ids, edges, edge_similarity, response_signatures,
    prompt_groups, prompt_rows, prompt_signatures, exact_hash, layout_free_hash, config, stage,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Group verified edges into clusters, pick survivors, and build the cluster table and ledger rows."""
    members = pl.DataFrame(
        {
            "node": np.arange(len(signed), dtype=np.int64),
            "sample_id": signed_ids,
            "quality_score": work["quality_score"].gather(signed),
        },
        schema={"node": pl.Int64, "sample_id": pl.String, "quality_score": pl.Float64},
    )
    labels = connected_components(len(signed), edges)
    ranks = _survivor_ranks(members, config.survivor_rule)
    labels = _separate_layout_variants(labels, edges, exact_hash, layout_free_hash, ranks)
    members = members.with_columns(pl.Series("group", labels, dtype=pl.Int64)).filter(pl.len().over("group") >= 2)
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
