"""GPU tests run only where CUDA is present (the GPU machine, a cloud GPU worker); skipped elsewhere."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs CUDA: run on a GPU machine (docs/cluster.md, GPUs)")
    cuda = _cuda_available()
    # This hook sees the whole session's items, not only this directory's.
    for item in items:
        if HERE not in item.path.parents:
            continue
        item.add_marker(pytest.mark.gpu)
        if not cuda:
            item.add_marker(skip)
