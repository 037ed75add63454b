"""CPU use and memory of this process tree while a benchmark runs.

A daemon thread, not a process: psutil reads /proc in microseconds, so sampling every 0.1 s costs the
measured work next to nothing, and a thread sees this process without any hand-off.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from types import TracebackType
from typing import Any

_MIB = 2**20
_RELIST_EVERY = 10  # samples between listings of the child processes


class SystemSampler:
    """Samples the process and its children every `interval` s between enter and exit; read `.fields()` after.

    CPU percent is psutil's (100 = one core busy), averaged over the window weighted by each sample's span.
    Memory is MiB: the peak RSS of the tree, and the peak CUDA allocation when this process uses CUDA.
    """

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self._stop = threading.Event()
        self._procs: dict[int, Any] = {}  # one object per pid: cpu_percent counts from that object's last call
        self._tree: list[Any] = []
        self._ticks = 0
        self._busy_s = 0.0  # percent x seconds
        self._span_s = 0.0
        self._rss_peak = 0
        self._gpu_peak_mb: float | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SystemSampler:
        import psutil

        self._psutil = psutil
        self._root = psutil.Process()
        torch = _cuda_torch()
        if torch is not None:  # the peak since now, not since the model was loaded or an earlier row ran
            for i in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(i)
        self._last = time.perf_counter()
        self._sample(prime=True)
        self._thread = threading.Thread(target=self._loop, name="oellm-bench-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample(relist=True)  # a window shorter than `interval` still gets one reading
        torch = _cuda_torch()
        if torch is not None:
            total = sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
            self._gpu_peak_mb = total / _MIB

    def _loop(self) -> None:
        """The only sampler while it runs: enter samples before it starts and exit after it ends."""
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self, prime: bool = False, relist: bool = False) -> None:
        psutil = self._psutil
        if relist or self._ticks % _RELIST_EVERY == 0:
            # Finding children reads every process's /proc entry, costly on a busy node: about once a second.
            with contextlib.suppress(psutil.Error):
                self._tree = [self._procs.setdefault(p.pid, p) for p in [self._root, *self._root.children(True)]]
        self._ticks += 1
        cpu, rss = 0.0, 0
        for proc in self._tree:
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
            except psutil.Error:  # exited since the listing
                continue
        now = time.perf_counter()
        if not prime:
            self._busy_s += cpu * (now - self._last)
            self._span_s += now - self._last
        self._last = now
        self._rss_peak = max(self._rss_peak, rss)

    def fields(self) -> dict[str, float | None]:
        return {"cpu_util_percent_mean": self._busy_s / self._span_s if self._span_s > 0 else None,
                "peak_rss_mb": self._rss_peak / _MIB if self._rss_peak else None,
                "gpu_mem_peak_mb": self._gpu_peak_mb}


def _cuda_torch() -> Any:
    """torch when this process already imported it and initialised CUDA; a CPU run never imports it here."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return torch
