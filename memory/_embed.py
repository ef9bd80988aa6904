"""Sentence embeddings with all-MiniLM-L6-v2 (bundled, offline), in batches, on CUDA when present."""

from __future__ import annotations

import os

import numpy as np

from controlplane._model_cache import embedding_model_path
from controlplane.errors import SetupError


class Embedder:
    """Unit-length float32 embeddings of texts."""

    def __init__(self, *, model_path: str | None = None, batch_size: int = 64, device: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(model_path or embedding_model_path()), device=self.device)
        dim = self.model.get_embedding_dimension()
        if dim is None:
            raise SetupError(what=f"the embedding model at {model_path or embedding_model_path()} has no fixed "
                                  "dimension", fix="point embedding_model_path at a sentence-transformers model")
        self.dim = int(dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors."""
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)
