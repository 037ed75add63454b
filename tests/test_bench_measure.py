"""The measurement core of `oellm bench`: summaries, spec checks, energy meters (a fake NVML), the system
sampler, and real timings of the tiny model on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oellm.bench.energy import EnergyWindow, NvmlMeter, energy_fields, open_meter, physical_gpus
from oellm.bench.measure import (
    BenchSpec,
    measure_hf,
    measure_vllm,
    percentile,
    random_prompts,
    run_hf,
    summarize,
)
from oellm.bench.system import SystemSampler
from oellm.errors import OellmError

REPO = Path(__file__).resolve().parents[1]
UUIDS = ["GPU-aaaa1111-0000", "GPU-bbbb2222-0000", "GPU-cccc3333-0000"]


class FakeNvml:
    """The NVML calls the meter makes, over per-GPU millijoule counters the test advances."""

    def __init__(self, uuids: list[str]):
        self.uuids, self.mj = uuids, [0] * len(uuids)

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> tuple[str, int]:
        if not 0 <= i < len(self.uuids):
            raise RuntimeError("Invalid Argument")
        return ("handle", i)

    def nvmlDeviceGetUUID(self, handle: tuple[str, int]) -> bytes:
        return self.uuids[handle[1]].encode()  # older pynvml returns bytes

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: tuple[str, int]) -> int:
        return self.mj[handle[1]]


@dataclass
class FixedMeter:
    """Reads `joules` over any window; None: fails at stop, like a counter lost mid-run."""

    joules: float | None = 12.0
    name: str = "fixed"

    def start(self) -> None:
        pass

    def stop(self) -> float:
        if self.joules is None:
            raise RuntimeError("counter gone")
        return self.joules


# --- pure -------------------------------------------------------------------------------------------

@pytest.mark.fast
def test_summarize_median_and_p90_on_known_numbers() -> None:
    samples = [{"latency_s": v, "ttft_s": t, "tpot_s": None, "output_tokens": 8}
               for v, t in zip([5.0, 1.0, 4.0, 2.0, 3.0], [0.5, None, 0.3, 0.1, 0.2], strict=True)]
    out = summarize(samples)
    assert out["latency_s"] == 3.0
    assert out["latency_s_p90"] == pytest.approx(4.6)  # rank 3.6 of 0..4: 4 + 0.6 x (5 - 4)
    assert out["ttft_s"] == pytest.approx(0.25) and out["ttft_s_p90"] == pytest.approx(0.44)  # None skipped
    assert out["tpot_s"] is None and out["tpot_s_p90"] is None
    assert out["output_tokens"] == 8 and isinstance(out["output_tokens"], int) and "output_tokens_p90" not in out
    assert percentile([7.0], 0.9) == 7.0


@pytest.mark.fast
@pytest.mark.parametrize("bad", [{"output_tokens": 0}, {"batch_size": 0}, {"num_runs": 0}, {"warmup_runs": -1},
                                 {"input_tokens": 2.5}, {"batch_size": True}, {"data": "sharegpt"}])
def test_bad_spec_is_one_clear_line(bad: dict[str, Any]) -> None:
    with pytest.raises(OellmError) as err:
        BenchSpec(**{"batch_size": 1, "input_tokens": 8, "output_tokens": 4, **bad})
    assert "\n" not in str(err.value) and next(iter(bad)) in str(err.value)


@pytest.mark.fast
def test_random_prompts_are_seeded_and_avoid_special_ids() -> None:
    spec = BenchSpec(batch_size=3, input_tokens=50, output_tokens=1)
    rows = random_prompts(10, {0, 1, 2}, spec)
    assert rows == random_prompts(10, {0, 1, 2}, spec) != random_prompts(10, {0, 1, 2}, BenchSpec(3, 50, 1, seed=1))
    assert len(rows) == 3 and all(len(r) == 50 and min(r) >= 3 for r in rows)


@pytest.mark.fast
def test_importing_the_package_imports_no_torch() -> None:
    code = ("import sys, oellm.bench.measure, oellm.bench.energy, oellm.bench.system; "
            "print(sorted(m for m in ('torch', 'transformers', 'pynvml', 'psutil') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.fast
def test_vllm_backend_without_vllm_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(OellmError, match="backend vllm: vllm is not installed"):
        measure_vllm("/models/x", BenchSpec(1, 8, 4))


# --- energy -----------------------------------------------------------------------------------------

@pytest.mark.fast
@pytest.mark.parametrize(("visible", "expected"), [
    (None, [0, 1, 2]), ("", []), ("2,0", [2, 0]), (" 1 ", [1]), ("1,-1,0", [1]), ("0,,2", [0]),
    ("GPU-bbbb2222-0000", [1]), ("GPU-cccc,0", [2, 0]),  # CUDA accepts a unique uuid prefix
])
def test_physical_gpus_maps_cuda_visible_devices(visible: str | None, expected: list[int]) -> None:
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert physical_gpus(env, FakeNvml(UUIDS)) == expected


@pytest.mark.fast
@pytest.mark.parametrize("visible", ["GPU-dddd", "GPU-", "MIG-aaaa1111-0000/1/0"])
def test_physical_gpus_refuses_what_it_cannot_map(visible: str) -> None:
    with pytest.raises(OellmError, match="CUDA_VISIBLE_DEVICES entry"):
        physical_gpus({"CUDA_VISIBLE_DEVICES": visible}, FakeNvml(UUIDS))


@pytest.mark.fast
def test_nvml_meter_sums_the_visible_physical_gpus() -> None:
    nvml = FakeNvml(UUIDS)
    nvml.mj = [10_000, 20_000, 30_000]  # counters run since the driver loaded
    meter = NvmlMeter(physical_gpus({"CUDA_VISIBLE_DEVICES": "GPU-cccc3333-0000,0"}, nvml), nvml)
    meter.start()
    nvml.mj = [11_500, 99_000, 32_500]  # GPU 1 is not ours: its 79 J must not count
    assert meter.stop() == pytest.approx(4.0)


@pytest.fixture
def no_meter_modules(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """As if none of the meter packages were installed (None in sys.modules halts an import)."""
    for name in ("zeus", "zeus.monitor", "pynvml", "amdsmi"):
        monkeypatch.setitem(sys.modules, name, None)
    return monkeypatch


@pytest.mark.fast
def test_open_meter_picks_nvml_or_says_why_not(no_meter_modules: pytest.MonkeyPatch) -> None:
    assert open_meter({}) == (None, "no GPU energy meter: zeus/pynvml/amdsmi not installed")
    meter, reason = open_meter({"CUDA_VISIBLE_DEVICES": ""})
    assert meter is None and "hides every GPU" in reason
    no_meter_modules.setitem(sys.modules, "pynvml", FakeNvml([]))
    meter, reason = open_meter({})
    assert meter is None and reason.startswith("no GPU energy meter: NVML: no GPU;")
    no_meter_modules.setitem(sys.modules, "pynvml", FakeNvml(UUIDS))  # zeus missing: NVML is next
    meter, reason = open_meter({"CUDA_VISIBLE_DEVICES": "1"})
    assert reason == "" and isinstance(meter, NvmlMeter) and meter.handles == [("handle", 1)]


@pytest.mark.fast
def test_energy_fields_are_null_never_zero_without_a_reading() -> None:
    assert energy_fields(None, 100, 2.0, "NVML: no GPU") == {
        "energy_j": None, "energy_per_token_j": None, "avg_power_w": None,
        "energy_meter": None, "energy_missing_reason": "NVML: no GPU"}
    assert energy_fields(10.0, 100, 2.0, "", "nvml") == {
        "energy_j": 10.0, "energy_per_token_j": 0.1, "avg_power_w": 5.0,
        "energy_meter": "nvml", "energy_missing_reason": None}
    with EnergyWindow((FixedMeter(None), "")) as window:
        pass
    assert window.fields(10)["energy_j"] is None
    assert window.fields(10)["energy_missing_reason"] == "fixed: stop failed: counter gone"


# --- system sampler ---------------------------------------------------------------------------------

@pytest.mark.fast
def test_system_sampler_counts_the_process_tree() -> None:
    """The child's 300 MB must show on top of this process's own memory: the pytest process alone may be
    above 300 MB in suite order, so a sampler reading only itself must fail here too."""
    import psutil

    child = ("import sys, time; block = b'x' * (300 * 2**20); print('ready', flush=True); "
             "sys.stdin.read()")
    own_mb = psutil.Process().memory_info().rss / 2**20
    with SystemSampler(interval=0.01) as sampler:  # children are relisted every 10 samples: 0.1 s
        proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:  # keep this process busy too
            pass
        proc.communicate("")
    fields = sampler.fields()
    assert fields["peak_rss_mb"] is not None and fields["peak_rss_mb"] > own_mb + 250  # the child's block counts
    assert fields["cpu_util_percent_mean"] is not None and fields["cpu_util_percent_mean"] > 10
    assert fields["gpu_mem_peak_mb"] is None  # no CUDA in this process


# --- the tiny model on CPU --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lm(tiny_model: Path) -> Iterator[tuple[Any, Any]]:
    """The tiny model on one torch thread: with more, a core taken by another process stalls OpenMP's
    threads and a millisecond call swings tenfold; on one it repeats within a few percent."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    torch.set_num_threads(threads)


@pytest.mark.e2e
def test_every_run_is_consistent(tiny_lm: tuple[Any, Any]) -> None:
    model, tok = tiny_lm
    spec = BenchSpec(batch_size=2, input_tokens=8, output_tokens=6, num_runs=3, warmup_runs=1)
    runs = run_hf(model, tok, spec, "cpu")
    assert len(runs.streamed) == len(runs.plain) == 3
    for s in runs.streamed:
        assert 0 < s["ttft_s"] < s["latency_s"]
        assert s["output_tokens"] == 6 and s["input_tokens"] == 8
        assert s["output_tokens_per_s"] == pytest.approx(2 * 6 / s["latency_s"])
        assert s["tpot_s"] == pytest.approx((s["latency_s"] - s["ttft_s"]) / 5)
    assert all(s["ttft_s"] is None and s["tpot_s"] is None for s in runs.plain)


@pytest.mark.e2e
def test_measure_hf_result_is_flat_json_without_energy_on_cpu(tiny_lm: tuple[Any, Any]) -> None:
    model, tok = tiny_lm
    out = measure_hf(model, tok, BenchSpec(2, 8, 4, num_runs=3, warmup_runs=1), "cpu")
    assert json.loads(json.dumps(out)) == out
    assert all(v is None or isinstance(v, (int, float, str)) for v in out.values())
    assert out["backend"] == "hf" and out["num_runs"] == 3 and out["batch_size"] == 2 and out["output_tokens"] == 4
    assert out["streamer_overhead_s"] == pytest.approx(out["latency_s"] - out["latency_s_no_streamer"])
    assert out["latency_s"] <= out["latency_s_p90"] and out["ttft_s"] <= out["ttft_s_p90"]
    assert out["energy_j"] is None and out["energy_per_token_j"] is None and out["avg_power_w"] is None
    assert out["energy_missing_reason"] and out["energy_meter"] is None
    assert out["peak_rss_mb"] > 0 and out["cpu_util_percent_mean"] is not None


@pytest.mark.e2e
def test_measure_hf_without_streamer_and_one_token(tiny_lm: tuple[Any, Any]) -> None:
    model, tok = tiny_lm
    out = measure_hf(model, tok, BenchSpec(1, 8, 1, num_runs=2, warmup_runs=0, streamer=False), "cpu")
    assert out["ttft_s"] is None and out["tpot_s"] is None and out["streamer_overhead_s"] is None
    assert out["latency_s"] == out["latency_s_no_streamer"]
    runs = run_hf(model, tok, BenchSpec(1, 8, 1, num_runs=1, warmup_runs=0), "cpu")
    assert runs.streamed[0]["ttft_s"] is not None and runs.streamed[0]["tpot_s"] is None


class CallMeter:
    """Reads one joule per `generate` call made between start and stop: a window holding a warm-up run
    reads more (a meter returning a fixed number could not tell)."""

    name = "calls"

    def __init__(self, model: Any, monkeypatch: pytest.MonkeyPatch):
        self.on, self.calls = False, 0
        generate = model.generate

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += self.on
            return generate(*args, **kwargs)

        monkeypatch.setattr(model, "generate", counted)

    def start(self) -> None:
        self.on, self.calls = True, 0

    def stop(self) -> float:
        self.on = False
        return float(self.calls)


@pytest.mark.e2e
def test_energy_covers_the_timed_window_only(tiny_lm: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    model, tok = tiny_lm
    spec = BenchSpec(batch_size=2, input_tokens=8, output_tokens=4, num_runs=3, warmup_runs=2)
    out = measure_hf(model, tok, spec, "cpu", meter=(CallMeter(model, monkeypatch), ""))
    tokens = 2 * 3 * 2 * 4  # with and without streamer x runs x batch x new tokens; no warm-up
    assert out["energy_j"] == 2 * 3  # the timed generate calls, with and without streamer; not the 2 warm-ups
    assert out["energy_per_token_j"] == pytest.approx(6.0 / tokens)
    assert out["avg_power_w"] > 0 and out["energy_meter"] == "calls" and out["energy_missing_reason"] is None


@pytest.mark.e2e
def test_too_long_for_the_model_is_refused(tiny_lm: tuple[Any, Any]) -> None:
    model, tok = tiny_lm
    with pytest.raises(OellmError, match="128 positions"):
        measure_hf(model, tok, BenchSpec(1, 100, 100), "cpu")


@pytest.mark.e2e
def test_the_timed_calls_are_the_bare_generate_calls(tiny_lm: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """measure_hf times exactly the calls a bare benchmark makes: warm-ups, then each run with and without the
    streamer, each one greedy `generate` of the asked lengths (counted, not timed: a tiny-model call takes
    milliseconds on a shared core; benchmarks/bench_latency.py prints the latency figures on a real model)."""
    model, tok = tiny_lm
    spec = BenchSpec(batch_size=4, input_tokens=16, output_tokens=16, num_runs=5, warmup_runs=1)
    calls: list[dict[str, Any]] = []
    generate = model.generate

    def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append({"shape": tuple(kwargs["input_ids"].shape), "streamer": kwargs.get("streamer") is not None,
                      **{k: kwargs.get(k) for k in ("do_sample", "min_new_tokens", "max_new_tokens")}})
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", recorded)
    out = measure_hf(model, tok, spec, "cpu")
    bare = {"shape": (4, 16), "do_sample": False, "min_new_tokens": 16, "max_new_tokens": 16}
    assert [{k: c[k] for k in bare} for c in calls] == [bare] * (1 + 2 * 5)
    assert [c["streamer"] for c in calls[1:]] == [True, False] * 5
    assert out["num_runs"] == 5 and out["output_tokens"] == 16
