"""The serving benchmarks' ceiling: vLLM's offline `LLM.chat` on the same model, engine settings and prompts, every
request submitted at once, at most `--concurrency` of them in the engine's batch (`max_num_seqs`: the concurrency
of the path it is compared with), no server, no streaming. Run as a child process, so its engine dies with it;
prints one JSON line: output tok/s of each repetition after a warm-up, and each repetition's wall-clock window.

    python benchmarks/_serving_offline.py MODEL_DIR --requests 128 --concurrency 64 --max-tokens 64 --reps 3
        --engine-kwargs '{"max_model_len": 2048, "enforce_eager": true, "dtype": "bfloat16"}'
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._serving_load import cpu_engine_settings, engine_env, prompt  # noqa: E402


def offline_tok_s(model_dir: str, **settings) -> list[float]:
    """Output tok/s, one per repetition (see `offline_runs`)."""
    return offline_runs(model_dir, **settings)[0]


def offline_runs(model_dir: str, *, requests: int, concurrency: int, max_tokens: int, reps: int, log_path: Path,
                 timeout_s: float = 900, engine_kwargs: dict | None = None) -> tuple[list[float], list[list[float]]]:
    """Run this file as a child process with the engine's environment; its output tok/s, one per repetition, and
    each repetition's (start, end) in `time.time()` seconds. `engine_kwargs`: the engine's settings; default the
    CPU engine's (a GPU engine's differ)."""
    settings = cpu_engine_settings() if engine_kwargs is None else engine_kwargs
    command = [sys.executable, __file__, model_dir, "--requests", str(requests), "--concurrency", str(concurrency),
               "--max-tokens", str(max_tokens), "--reps", str(reps), "--engine-kwargs", json.dumps(settings)]
    with open(log_path, "w") as log:
        done = subprocess.run(command, env={**os.environ, **engine_env()}, stdout=subprocess.PIPE, stderr=log,
                              text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"offline vLLM exited with {done.returncode}; see {log_path}")
    line = json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith('{"tok_s"')))
    return line["tok_s"], line["windows"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--max-tokens", type=int, required=True)
    parser.add_argument("--reps", type=int, required=True)
    parser.add_argument("--engine-kwargs", type=json.loads, required=True, help="the engine's settings, JSON")
    args = parser.parse_args()
    from vllm import LLM, SamplingParams

    llm = LLM(model=args.model_dir, max_num_seqs=args.concurrency, **args.engine_kwargs)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True)
    conversations = [prompt(index) for index in range(args.requests)]
    llm.chat(conversations[:2], SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True), use_tqdm=False)
    rates, windows = [], []
    for _ in range(args.reps):
        start, started_at = time.perf_counter(), time.time()
        outputs = llm.chat(conversations, params, use_tqdm=False)
        wall_s = time.perf_counter() - start
        rates.append(sum(len(o.outputs[0].token_ids) for o in outputs) / wall_s)
        windows.append([started_at, started_at + wall_s])
    print(json.dumps({"tok_s": rates, "windows": windows}), flush=True)


if __name__ == "__main__":
    main()
