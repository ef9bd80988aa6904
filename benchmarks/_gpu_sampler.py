"""GPU utilisation and memory while a benchmark measures: NVML's readings through `nvidia-smi`, polled on a thread.

`utilization.gpu` is NVML's share of the last sample period in which a kernel ran on the GPU (the `sm` column of
`nvidia-smi dmon`); it says how busy the SMs were kept, not how many of them each kernel filled.
"""

from __future__ import annotations

import statistics
import subprocess
import threading
import time
from dataclasses import dataclass

QUERY = ("nvidia-smi", "--query-gpu=utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits",
         "--id=0")


@dataclass(frozen=True)
class GpuSample:
    time_s: float
    utilization_pct: float
    memory_used_mib: float
    memory_total_mib: float


def parse_sample(line: str, time_s: float) -> GpuSample:
    """One line of `QUERY`'s output, e.g. `87, 120345, 143771`."""
    utilization, used, total = (float(field) for field in line.strip().split(","))
    return GpuSample(time_s, utilization, used, total)


def summarise(samples: list[GpuSample], windows: list[list[float]]) -> dict[str, float | int | None]:
    """The samples taken inside `windows` ((start, end) in time.time() seconds): utilisation mean, median and
    minimum, peak memory used and the GPU's memory."""
    inside = [s for s in samples if any(start <= s.time_s <= end for start, end in windows)]
    if not inside:
        return {"samples": 0, "sm_util_mean_pct": None, "sm_util_p50_pct": None, "sm_util_min_pct": None,
                "memory_used_peak_mib": None, "memory_total_mib": None}
    utilization = [s.utilization_pct for s in inside]
    return {"samples": len(inside), "sm_util_mean_pct": statistics.fmean(utilization),
            "sm_util_p50_pct": statistics.median(utilization), "sm_util_min_pct": min(utilization),
            "memory_used_peak_mib": max(s.memory_used_mib for s in inside),
            "memory_total_mib": inside[0].memory_total_mib}


class GpuSampler:
    """`with GpuSampler() as gpu:` polls `nvidia-smi` every `interval_s` until the block ends; `gpu.samples` holds
    the readings. A failed reading stops the sampler and is raised as the block ends."""

    def __init__(self, interval_s: float = 0.25, query: tuple[str, ...] = QUERY) -> None:
        self.interval_s, self.query = interval_s, query
        self.samples: list[GpuSample] = []
        self._stop = threading.Event()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._poll, name="gpu-sampler", daemon=True)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise RuntimeError(f"GPU sampling failed: {self._error}") from self._error

    def _poll(self) -> None:
        while not self._stop.is_set():
            taken = time.time()
            try:
                out = subprocess.run(self.query, capture_output=True, text=True, timeout=10, check=True).stdout
                self.samples.append(parse_sample(out.splitlines()[0], taken))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
                self._error = exc
                return
            self._stop.wait(self.interval_s)
