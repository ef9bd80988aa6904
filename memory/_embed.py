"""Sentence embeddings with all-MiniLM-L6-v2 (bundled, offline), in batches, on CUDA when present."""

from __future__ import annotations

import os

import numpy as np

from controlplane._model_cache import embedding_model_path
from controlplane.errors import SetupError

BULK_TEXTS = 32


class Embedder:
    """Unit-length float32 embeddings of texts.

    On CPU, a batch of fewer than BULK_TEXTS texts (a search's, an agent's post) is embedded on one torch thread,
    larger ones on `threads`. torch's thread team spins until each of its threads has a core, so where the cores
    are busy (a vLLM engine beside the memory actor) it made a search several times slower. torch keeps the
    thread count per calling thread, so concurrent encodes of both sizes each run on their own count."""

    def __init__(self, *, model_path: str | None = None, batch_size: int = 64, device: str | None = None,
                 threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.threads = threads or os.cpu_count() or 1
        self.model = SentenceTransformer(str(model_path or embedding_model_path()), device=self.device)
        dim = self.model.get_embedding_dimension()
        if dim is None:
            raise SetupError(what=f"the embedding model at {model_path or embedding_model_path()} has no fixed "
                                  "dimension", fix="point embedding_model_path at a sentence-transformers model")
        self.dim = int(dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors."""
        if self.device == "cpu":
            self._torch.set_num_threads(self.threads if len(texts) >= BULK_TEXTS else 1)
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)
