"""GPU tests run only where CUDA is present (the GPU machine, a cloud GPU worker); skipped elsewhere."""

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs CUDA: run on a GPU machine (see README: Running on a GPU cluster)")
    cuda = _cuda_available()
    for item in items:
        item.add_marker(pytest.mark.gpu)
        if not cuda:
            item.add_marker(skip)
