"""Stage 1: normalization, quality rules, exact and near dedup, toxicity."""

import time

import polars as pl
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import record_stage
from filters.stage1 import Stage1Config, run_stage1
from pipelines.resources import ToxicityModel
from pipelines.score_cache import WarehouseScoreCache
from pipelines.warehouse import Warehouse

TOXICITY_CACHE_TABLE = "toxicity_score_cache"


class Stage1Settings(Config):
    near_duplicate_threshold: float = Field(
        default=Stage1Config.near_duplicate_threshold,
        description="Minimum estimated Jaccard similarity of shingle sets for two samples to be near duplicates.",
    )
    max_toxicity: float = Field(
        default=Stage1Config.max_toxicity,
        description="Samples whose response toxicity probability is at or above this value are rejected.",
    )
    seed: int = Field(default=Stage1Config.seed, description="Seed of the MinHash permutations.")


@asset(group_name="curation", deps=["raw_samples"], kinds={"duckdb", "polars"})
def basic_filtered(
    context: AssetExecutionContext, config: Stage1Settings, warehouse: Warehouse, toxicity_model: ToxicityModel
) -> MaterializeResult:
    """Samples that passed stage 1: normalized, within quality bounds, deduplicated and not toxic."""
    samples = warehouse.read_table("raw_samples")
    stage_config = Stage1Config(
        near_duplicate_threshold=config.near_duplicate_threshold, max_toxicity=config.max_toxicity, seed=config.seed
    )
    started = time.perf_counter()
    context.log.info(f"stage 1 on {samples.height} samples")
    # Toxicity scores are cached by content hash, so changing max_toxicity re-decides without re-scoring.
    cache = WarehouseScoreCache(warehouse, table=TOXICITY_CACHE_TABLE)
    result = run_stage1(samples, stage_config, toxicity_model.load(), toxicity_cache=cache)
    result.check_conservation(samples["sample_id"])
    toxicity_texts_from_cache = cache.hits
    toxicity_texts_scored_new = cache.flush()
    metadata = record_stage(
        warehouse, result, stage="stage1", output_table="basic_filtered", run_id=context.run_id,
        seconds=time.perf_counter() - started,
    )
    clusters = result.tables.get("clusters")
    if clusters is not None and clusters.height:
        metadata["clusters"] = clusters["cluster_id"].n_unique()
        metadata["clustered_samples"] = clusters.height
        metadata["survivors"] = clusters.filter(pl.col("is_survivor")).height
        per_kind = clusters.group_by("kind").agg(pl.col("cluster_id").n_unique().alias("clusters"))
        metadata["clusters_by_kind"] = MetadataValue.json(dict(per_kind.iter_rows()))
    dedup = stage_config.dedup_config()
    metadata["near_dedup_settings"] = MetadataValue.json(
        {
            "threshold": dedup.near_duplicate_threshold,
            "num_perm": dedup.num_perm,
            "bands": dedup.bands,
            "rows": dedup.rows,
            "word_shingle_size": dedup.word_shingle_size,
            "char_shingle_size": dedup.char_shingle_size,
            "survivor_rule": dedup.survivor_rule,
        }
    )
    metadata["toxicity_texts_from_cache"] = toxicity_texts_from_cache
    metadata["toxicity_texts_scored_new"] = toxicity_texts_scored_new
    return MaterializeResult(metadata=metadata)
