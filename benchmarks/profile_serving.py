"""profile_serving: where the router path spends its CPU per token, by process and by function.

Deploys the router app of bench_serving (one vLLM replica), drives streaming chat at one concurrency over
HTTP (or the handle API) and samples the router replica, the Serve proxy and the vLLM replica with py-spy
(`pip install py-spy`; needs ptrace rights). Prints CPU ms per token per process and each process's
top functions by own time and by total time; raw py-spy stacks go to --out.

    python benchmarks/profile_serving.py [--concurrency 16] [--seconds 20] [--path http|handle] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray runs its workers at niceness 15; the peers started outside Ray run at 0. One niceness for all, or a busy
# machine decides the comparison.
os.environ.setdefault("RAY_worker_niceness", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from benchmarks._serving_load import _label, cpu_seconds, engines_stopped, handle_caller, http_caller  # noqa: E402

APP = "profile-router"
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def roles() -> dict[str, int]:
    """pid of the router replica, the Serve proxy and the vLLM replica (and its engine) among our children."""
    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            label = _label(proc)
        except psutil.Error:
            continue
        if label in ("replica:Router", "serve_proxy", "replica:default", "engine_enginecore"):
            found[label] = proc.pid
    return found


def summarise(raw: Path, top: int = 15) -> str:
    """Own-time and total-time leaders of a py-spy raw (collapsed) stack file."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f]
        n = int(count)
        samples += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"    {samples} samples; own time:"]
    lines += [f"      {100 * n / samples:5.1f}%  {frame[:150]}" for frame, n in own.most_common(top)]
    lines.append("    total time (frame on the stack):")
    lines += [f"      {100 * n / samples:5.1f}%  {frame[:150]}" for frame, n in total.most_common(top)
              if "<module>" not in frame]
    return "\n".join(lines)


async def load(call, concurrency: int, seconds: float, max_tokens: int) -> int:
    """Clients that send requests back to back until `seconds` pass; the tokens generated."""
    end = time.monotonic() + seconds
    tokens = 0

    async def client(worker: int) -> None:
        nonlocal tokens
        index = worker
        while time.monotonic() < end:
            tokens += (await call(index, max_tokens)).tokens
            index += concurrency

    await asyncio.gather(*[client(w) for w in range(concurrency)])
    return tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--path", choices=("http", "handle"), default="http")
    parser.add_argument("--out", type=Path, default=Path("/tmp/profile_serving"))
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    import httpx
    import ray
    from ray import serve

    from benchmarks._ports import free_port
    from benchmarks.bench_serving import build_router_app
    from controlplane._model_cache import default_model_path
    from serving import RouterClient

    ray.init(num_cpus=16, include_dashboard=False, log_to_driver=False)
    port = free_port()
    with engines_stopped("profile", lambda: (serve.shutdown(), ray.shutdown())):
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_router_app(str(default_model_path())), name=APP, route_prefix=f"/{APP}")

        async def run() -> None:
            async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=256)) as http:
                call = (http_caller(http, f"http://127.0.0.1:{port}/{APP}/v1", "default") if args.path == "http"
                        else handle_caller(RouterClient(APP).stream))
                await load(call, 4, 5, 64)  # warm-up
                pids = roles()
                spies = {role: subprocess.Popen(
                    [PY_SPY, "record", "--pid", str(pid), "--rate", str(args.rate), "--duration",
                     str(int(args.seconds)), "--format", "raw", "--nonblocking", "--output",
                     str(args.out / f"{role.replace(':', '_')}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for role, pid in pids.items() if role != "engine_enginecore"}
                before = cpu_seconds()
                tokens = await load(call, args.concurrency, args.seconds, 64)
                after = cpu_seconds()
                for spy in spies.values():
                    spy.wait(60)
                print(f"{args.path} at c{args.concurrency}: {tokens} tokens in {args.seconds:g} s; CPU ms per token:")
                for role in sorted(after):
                    used_ms = 1000 * (after[role] - before.get(role, 0.0)) / max(1, tokens)
                    if used_ms > 0.01:
                        print(f"  {role:24} {used_ms:7.2f}")
                for role in spies:
                    path = args.out / f"{role.replace(':', '_')}.txt"
                    if path.exists() and path.stat().st_size:
                        print(f"  {role} ({path}):\n{summarise(path)}")

        asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
