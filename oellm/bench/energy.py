"""GPU energy over a window of work, from the vendors' cumulative energy counters.

A counter difference rather than integrated power samples: it is exact to the driver's resolution,
misses no spike and needs no thread. Every counter covers a whole device, so work of other processes
on the same GPU is counted too. A missing meter is a blank in the results, never an error.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

from oellm.errors import OellmError

_WINDOW = "oellm-bench"


class Meter(Protocol):
    """Energy of the visible GPUs between `start()` and `stop()`."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> float:
        """Joules since `start()`."""
        ...


def visible_entries(value: str | None) -> list[str] | None:
    """A *_VISIBLE_DEVICES value read as CUDA reads it: None when unset (every device); the list ends at
    the first empty or negative entry, because CUDA ignores everything from there on."""
    if value is None:
        return None
    entries: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry or (entry.startswith("-") and entry[1:].isdigit()):
            break
        entries.append(entry)
    return entries


def _nvml() -> Any:
    return importlib.import_module("pynvml")


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def physical_gpus(env: Mapping[str, str], nvml: Any = None) -> list[int]:
    """NVML's indices of the GPUs this process sees: energy counters are per physical device, while CUDA
    numbers only the visible ones. Integers pass through: they match NVML's order under SLURM (device
    cgroups renumber both) and whenever CUDA_DEVICE_ORDER=PCI_BUS_ID or the GPUs are all alike."""
    entries = visible_entries(env.get("CUDA_VISIBLE_DEVICES"))
    if entries is not None and all(e.isdigit() for e in entries):
        return [int(e) for e in entries]
    nvml = nvml or _nvml()
    count = nvml.nvmlDeviceGetCount()
    if entries is None:
        return list(range(count))
    uuids = {i: _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)}
    indices: list[int] = []
    for entry in entries:
        if entry.isdigit():
            indices.append(int(entry))
            continue
        if entry.startswith("MIG-"):
            raise OellmError(f"CUDA_VISIBLE_DEVICES entry {entry} is a MIG instance: the energy counter covers "
                             "the whole GPU, shared with the other instances")
        found = [i for i, uuid in uuids.items() if uuid.startswith(entry)]  # CUDA accepts a unique prefix
        if len(found) != 1:
            raise OellmError(f"CUDA_VISIBLE_DEVICES entry {entry} matches {len(found)} of NVML's {count} GPUs")
        indices.append(found[0])
    return indices


class NvmlMeter:
    """The sum of NVML's total-energy counters (millijoules since the driver loaded; Volta and newer) over
    physical GPU `indices`. `nvml` is the pynvml module, or a stand-in for tests."""

    name = "nvml"

    def __init__(self, indices: list[int], nvml: Any = None):
        self.nvml = nvml or _nvml()
        self.nvml.nvmlInit()
        if not indices:
            raise OellmError("no GPU")
        self.handles = [self.nvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
        self._start = self._read()  # an unsupported counter fails here, not after the runs

    def _read(self) -> list[int]:
        return [int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.handles]

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float:
        return sum(end - begin for begin, end in zip(self._start, self._read(), strict=True)) / 1000.0


class ZeusMeter:
    """Zeus's monitor, preferred when installed: it knows more devices and maps the visible ones itself."""

    name = "zeus"

    def __init__(self) -> None:
        from zeus.monitor import ZeusMonitor

        self.monitor = ZeusMonitor()
        if not getattr(self.monitor, "gpu_indices", [0]):
            raise OellmError("no GPU")

    def start(self) -> None:
        self.monitor.begin_window(_WINDOW)

    def stop(self) -> float:
        return float(sum(self.monitor.end_window(_WINDOW).gpu_energy.values()))


class AmdSmiMeter:
    """AMD's energy accumulator through amdsmi. Best effort and untested here (no AMD GPU, no amdsmi):
    written to amdsmi's documented `amdsmi_get_energy_count` (counter x resolution in microjoules)."""

    name = "amdsmi"

    def __init__(self, env: Mapping[str, str]):
        import amdsmi

        self.amdsmi = amdsmi
        amdsmi.amdsmi_init()
        handles = amdsmi.amdsmi_get_processor_handles()
        entries = visible_entries(env.get("HIP_VISIBLE_DEVICES", env.get("ROCR_VISIBLE_DEVICES",
                                                                        env.get("CUDA_VISIBLE_DEVICES"))))
        if entries is not None and not all(e.isdigit() for e in entries):
            raise OellmError(f"only numeric visible-device lists are mapped, got {entries}")
        self.handles = handles if entries is None else [handles[int(e)] for e in entries]
        if not self.handles:
            raise OellmError("no GPU")
        self._start = self._read()

    def _read(self) -> float:
        total = 0.0
        for handle in self.handles:
            info = self.amdsmi.amdsmi_get_energy_count(handle)
            counter = info.get("energy_accumulator", info.get("power", 0))
            total += float(counter) * float(info["counter_resolution"]) / 1e6
        return total

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float:
        return self._read() - self._start


def _open_nvml(env: Mapping[str, str]) -> NvmlMeter:
    nvml = _nvml()
    nvml.nvmlInit()
    return NvmlMeter(physical_gpus(env, nvml), nvml)


def open_meter(env: Mapping[str, str] = os.environ) -> tuple[Meter | None, str]:
    """The first meter that works here (Zeus, NVML, amdsmi) and "", or (None, why none does)."""
    if visible_entries(env.get("CUDA_VISIBLE_DEVICES")) == []:
        return None, "no GPU energy meter: CUDA_VISIBLE_DEVICES hides every GPU"
    tries: list[tuple[str, str, Callable[[], Meter]]] = [
        ("zeus", "zeus", ZeusMeter),
        ("pynvml", "NVML", lambda: _open_nvml(env)),
        ("amdsmi", "amdsmi", lambda: AmdSmiMeter(env)),
    ]
    missing: list[str] = []
    failed: list[str] = []
    for module, label, make in tries:
        try:
            return make(), ""
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] == module:
                missing.append(module)
            else:  # installed, but something it needs is not
                failed.append(f"{label}: {exc}")
        except Exception as exc:  # a meter is optional: any failure to open one is only a reason
            failed.append(f"{label}: {str(exc).strip() or type(exc).__name__}")
    parts = failed + ([f"{'/'.join(missing)} not installed"] if missing else [])
    return None, "no GPU energy meter: " + "; ".join(parts)


def energy_fields(joules: float | None, tokens: int, seconds: float, reason: str,
                  meter: str = "") -> dict[str, float | str | None]:
    """The energy columns of a result. None (JSON null), never 0, without a reading: a 0 would read as
    "free" and pull every mean down. Both name columns are always there, so every row has one schema."""
    if joules is None:
        return {"energy_j": None, "energy_per_token_j": None, "avg_power_w": None,
                "energy_meter": None, "energy_missing_reason": reason or "no energy meter"}
    return {"energy_j": joules,
            "energy_per_token_j": joules / tokens if tokens > 0 else None,
            "avg_power_w": joules / seconds if seconds > 0 else None,
            "energy_meter": meter or None, "energy_missing_reason": None}


class EnergyWindow:
    """A meter read around a block of work. A meter failing mid-run leaves a reason, not a lost benchmark."""

    def __init__(self, meter: tuple[Meter | None, str]):
        self.meter, self.reason = meter
        self.joules: float | None = None
        self.seconds = 0.0

    def __enter__(self) -> EnergyWindow:
        if self.meter is not None:
            try:
                self.meter.start()
            except Exception as exc:  # see open_meter: energy is optional
                self.reason, self.meter = f"{self.meter.name}: start failed: {exc}", None
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.seconds = time.perf_counter() - self._t0
        if self.meter is not None and kind is None:
            try:
                self.joules = self.meter.stop()
            except Exception as error:  # see open_meter: energy is optional
                self.reason = f"{self.meter.name}: stop failed: {error}"

    def fields(self, tokens: int) -> dict[str, float | str | None]:
        name = self.meter.name if self.meter is not None and self.joules is not None else ""
        return energy_fields(self.joules, tokens, self.seconds, self.reason, name)
