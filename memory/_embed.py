"""Sentence embeddings with all-MiniLM-L6-v2 (bundled, offline), in batches, on CUDA when present."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from controlplane._model_cache import embedding_model_path
from controlplane.errors import SetupError

MIN_CHUNK_TEXTS = 16


class Embedder:
    """Unit-length float32 embeddings of texts.

    On CPU, torch runs every encode on one thread (a process-wide setting), and a batch of at least
    2 x MIN_CHUNK_TEXTS texts is split into up to `threads` chunks encoded side by side. A search's single text
    then never waits on torch's own thread team, which spins until each of its threads gets a core: where the
    cores are busy (a vLLM engine beside the memory actor) that made a search many times slower."""

    def __init__(self, *, model_path: str | None = None, batch_size: int = 64, device: str | None = None,
                 threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.threads = (threads or os.cpu_count() or 1) if self.device == "cpu" else 1
        if self.device == "cpu":
            torch.set_num_threads(1)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="embed") if self.threads > 1 else None
        self.model = SentenceTransformer(str(model_path or embedding_model_path()), device=self.device)
        dim = self.model.get_embedding_dimension()
        if dim is None:
            raise SetupError(what=f"the embedding model at {model_path or embedding_model_path()} has no fixed "
                                  "dimension", fix="point embedding_model_path at a sentence-transformers model")
        self.dim = int(dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors."""
        chunks = self.chunks(len(texts))
        if self._pool is None or len(chunks) == 1:
            return self._encode(texts)
        return np.concatenate(list(self._pool.map(lambda span: self._encode(texts[span[0]:span[1]]), chunks)))

    def chunks(self, n: int) -> list[tuple[int, int]]:
        """The (start, end) spans a batch of `n` texts is encoded in, side by side."""
        size = math.ceil(n / max(1, min(self.threads, n // MIN_CHUNK_TEXTS))) or 1
        return [(start, min(start + size, n)) for start in range(0, n, size)] or [(0, 0)]

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)
