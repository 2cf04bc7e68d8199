"""Optional semantic dedup: samples whose prompt and response embeddings are both close.

Off by default in stage 1 (``Stage1Config.semantic_dedup``). It catches paraphrases that share few
word shingles, which MinHash cannot see. Two samples are linked when the cosine similarity of
their prompt embeddings and of their response embeddings are both at least ``min_cosine``.
Checking the prompt and the response separately keeps a shared prompt template from linking
different problems. Linked samples form connected components, each keeps one survivor by the
same rule as the other dedup steps, and the others are rejected with reason
``semantic_duplicate``.

NOTE: neighbours are found by exact blockwise matrix products, which cost O(n^2) dot
products: about 10^10 at 100,000 samples. Past that, use an approximate nearest-neighbour index.
"""

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from filters.dedup import (
    CLUSTER_SCHEMA,
    SURVIVOR_RULES,
    _pick_survivors,
    _quality_column,
    connected_components,
)
from filters.schema import StageResult, empty_ledger, ledger_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SemanticDedupConfig:
    """Settings of semantic dedup.

    min_cosine: both the prompt and the response embeddings must reach this cosine similarity.
        0.95 with all-MiniLM-L6-v2 links rewordings of one answer and keeps different answers
        to one question apart (see the tests).
    block_rows: rows of the similarity matrix computed at once; memory is
        ``block_rows * n * 4`` bytes.
    """

    min_cosine: float = 0.95
    survivor_rule: str = "quality_then_id"
    block_rows: int = 2048

    def __post_init__(self) -> None:
        if not 0.0 < self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine={self.min_cosine} is invalid: it must be in (0, 1]; the default is 0.95.")
        if self.survivor_rule not in SURVIVOR_RULES:
            raise ValueError(f"survivor_rule={self.survivor_rule!r} is invalid: use one of {list(SURVIVOR_RULES)}.")
        if self.block_rows < 1:
            raise ValueError(f"block_rows={self.block_rows} is invalid: it must be at least 1.")


def similar_pairs(
    prompt_vectors: np.ndarray, response_vectors: np.ndarray, min_cosine: float, block_rows: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Return pairs ``(i, j)``, ``i < j``, whose prompt and response cosines both reach ``min_cosine``.

    Vectors must be L2-normalized. Also returns the lower of the two cosines per pair.
    """
    count = prompt_vectors.shape[0]
    found_pairs: list[np.ndarray] = []
    found_scores: list[np.ndarray] = []
    for start in range(0, count, block_rows):
        stop = min(start + block_rows, count)
        scores = np.minimum(prompt_vectors[start:stop] @ prompt_vectors.T, response_vectors[start:stop] @ response_vectors.T)
        rows, columns = np.nonzero(scores >= min_cosine)
        rows += start
        upper = rows < columns
        found_pairs.append(np.stack([rows[upper], columns[upper]], axis=1))
        found_scores.append(scores[rows[upper] - start, columns[upper]].astype(np.float64))
    if not found_pairs:
        return np.empty((0, 2), dtype=np.int64), np.empty(0, dtype=np.float64)
    return np.concatenate(found_pairs).astype(np.int64), np.concatenate(found_scores)


def semantic_dedup(samples: pl.DataFrame, embedder, config: SemanticDedupConfig, *, stage: str = "stage1") -> StageResult:
    """Remove samples whose prompt and response embeddings are both close to another sample's.

    ``embedder.encode(texts)`` must return L2-normalized float vectors (``filters.embed.Embedder``).
    Rejected rows get reason ``semantic_duplicate``, ``score`` = their highest linking cosine and
    ``duplicate_of`` = the survivor; ``tables["clusters"]`` has kind ``semantic``.
    """
    quality = _quality_column(samples, config.survivor_rule)
    work = samples.select("sample_id", "source", "task", "prompt", "response", quality.alias("quality_score")).sort(
        "sample_id"
    )
    prompts = work["prompt"].fill_null("").to_list()
    responses = work["response"].fill_null("").to_list()
    pairs, scores = similar_pairs(embedder.encode(prompts), embedder.encode(responses), config.min_cosine, config.block_rows)
    log.info("semantic dedup: %d in, %d linked pairs at cosine >= %s", work.height, pairs.shape[0], config.min_cosine)

    members = work.select("sample_id", "quality_score").with_columns(
        pl.Series("group", connected_components(work.height, pairs), dtype=pl.Int64),
        pl.Series("node", np.arange(work.height), dtype=pl.Int64),
    ).filter(pl.len().over("group") >= 2)
    if members.height == 0:
        return StageResult(
            kept=samples, rejected=empty_ledger(), tables={"clusters": pl.DataFrame(schema=CLUSTER_SCHEMA)},
            rows_in=samples.height,
        )
    members = _pick_survivors(members, config.survivor_rule)
    best = pl.DataFrame(
        {"node": np.concatenate([pairs[:, 0], pairs[:, 1]]), "best": np.concatenate([scores, scores])},
        schema={"node": pl.Int64, "best": pl.Float64},
    ).group_by("node").agg(pl.col("best").max())
    members = members.join(best, on="node", how="left")

    clusters = members.select(
        (pl.lit("semantic:") + pl.col("survivor_id")).alias("cluster_id"),
        pl.lit("semantic").alias("kind"),
        "sample_id",
        (pl.col("sample_id") == pl.col("survivor_id")).alias("is_survivor"),
        "survivor_id",
        pl.when(pl.col("sample_id") == pl.col("survivor_id")).then(1.0).otherwise(pl.col("best")).alias("similarity"),
    ).sort("cluster_id", "sample_id").cast(CLUSTER_SCHEMA)
    losers = members.filter(pl.col("sample_id") != pl.col("survivor_id"))
    loser_rows = work.join(losers.select("sample_id", "survivor_id", "best"), on="sample_id")
    rejected = ledger_rows(
        loser_rows,
        stage=stage,
        filter_name="semantic_dedup",
        reason="semantic_duplicate",
        score=pl.col("best"),
        threshold=config.min_cosine,
        duplicate_of=pl.col("survivor_id"),
        detail=pl.format("cosine of prompt and response embeddings to a member of {}'s cluster", pl.col("survivor_id")),
    )
    kept = samples.filter(~pl.col("sample_id").is_in(losers["sample_id"].to_list()))
    log.info("semantic dedup: %d kept, %d duplicates", kept.height, rejected.height)
    return StageResult(kept=kept, rejected=rejected, tables={"clusters": clusters}, rows_in=samples.height)
