"""Latency, time to first token, throughput and energy of greedy generation at fixed lengths.

Fixed lengths (seeded random prompt ids, exactly `output_tokens` new tokens with eos suppressed) make
runs comparable across models and repeats: a real prompt or an early eos would change the work per run.
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oellm.bench.energy import EnergyWindow, Meter, open_meter
from oellm.bench.system import SystemSampler
from oellm.errors import OellmError

Sample = dict[str, Any]  # one run: float seconds and rates, int token counts, None where not measured
P90_KEYS = ("latency_s", "ttft_s", "tpot_s")
DATA_SOURCES = ("random",)


@dataclass
class BenchSpec:
    """One measurement: `num_runs` timed generate calls of `batch_size` x `input_tokens` -> `output_tokens`."""

    batch_size: int
    input_tokens: int
    output_tokens: int
    num_runs: int = 5
    warmup_runs: int = 2
    streamer: bool = True
    data: str = "random"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("input_tokens", 1), ("output_tokens", 1), ("num_runs", 1),
                          ("warmup_runs", 0), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise OellmError(f"bench: {name} must be an integer >= {low}, got {value!r}")
        if self.data not in DATA_SOURCES:
            raise OellmError(f"bench: data={self.data!r} is not supported; valid: {', '.join(DATA_SOURCES)}")


@dataclass
class Runs:
    """The per-run samples behind one summary, kept so tests (and a curious user) can check each run."""

    streamed: list[Sample]  # timed with the streamer (ttft, tpot); empty when the streamer is off
    plain: list[Sample]  # the same calls without it
    window: dict[str, Any]  # energy and system fields of the timed window


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between ranks (numpy's default), so the p90 of 5 runs is not simply the max."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(samples: list[Sample], p90: tuple[str, ...] = P90_KEYS) -> dict[str, Any]:
    """The median of every key over the runs (one slow run does not move it) and `<key>_p90` for the `p90`
    keys; None values are skipped, and a key that is None in every run stays None."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for sample in samples for k in sample):
        values = [s[key] for s in samples if s.get(key) is not None]
        median = statistics.median(values) if values else None
        if median is not None and all(isinstance(v, int) for v in values) and float(median).is_integer():
            median = int(median)
        out[key] = median
        if key in p90:
            out[f"{key}_p90"] = percentile(values, 0.9) if values else None
    return out


def run_sample(latency_s: float, ttft_s: float | None, batch_size: int, input_tokens: int,
               output_tokens: int) -> Sample:
    """The figures of one run; tpot is the decode step after the first token, so 1 new token has none."""
    tpot = (latency_s - ttft_s) / (output_tokens - 1) if ttft_s is not None and output_tokens > 1 else None
    return {"latency_s": latency_s, "ttft_s": ttft_s, "tpot_s": tpot,
            "output_tokens_per_s": batch_size * output_tokens / latency_s,
            "input_tokens": input_tokens, "output_tokens": output_tokens}


def random_prompts(vocab_size: int, special_ids: set[int], spec: BenchSpec) -> list[list[int]]:
    """`batch_size` rows of `input_tokens` seeded random ids, never a special one: an eos or pad inside the
    prompt would change what the model attends to."""
    allowed = [i for i in range(vocab_size) if i not in special_ids]
    if not allowed:
        raise OellmError(f"bench: no ordinary token ids below {vocab_size} to build a random prompt from")
    rng = random.Random(spec.seed)
    return [rng.choices(allowed, k=spec.input_tokens) for _ in range(spec.batch_size)]


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def prompt_ids(model: Any, tokenizer: Any, spec: BenchSpec) -> Any:
    """The prompt batch as a CPU LongTensor, the same one for every run and for a direct `generate`."""
    import torch

    vocab = model.get_input_embeddings().num_embeddings  # embeddings may be padded past the tokenizer
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    if tokenizer is not None:
        vocab = min(vocab, len(tokenizer))
    gen = model.generation_config
    for value in (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id):
        special.update(_ids(value))
    return torch.tensor(random_prompts(vocab, special, spec), dtype=torch.long)


def generate_kwargs(model: Any, tokenizer: Any, spec: BenchSpec) -> dict[str, Any]:
    """Greedy and exactly `output_tokens` new tokens: min = max new tokens suppresses eos, so every run
    does the same work. A pad id is always passed, since many tokenizers have none."""
    gen = model.generation_config
    eos = _ids(gen.eos_token_id) or _ids(getattr(tokenizer, "eos_token_id", None))
    pad = gen.pad_token_id if gen.pad_token_id is not None else getattr(tokenizer, "pad_token_id", None)
    kwargs: dict[str, Any] = {"do_sample": False, "num_beams": 1, "min_new_tokens": spec.output_tokens,
                              "max_new_tokens": spec.output_tokens,
                              "pad_token_id": pad if pad is not None else (eos[0] if eos else 0)}
    if eos:
        kwargs["eos_token_id"] = eos
    return kwargs


@functools.cache
def _stamps_class() -> type:
    from transformers.generation.streamers import BaseStreamer

    class Stamps(BaseStreamer):
        """Records when generate hands over tokens: first the prompt, then each new token (on mps,
        transformers streams one step late, which adds one decode step to the ttft there)."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def put(self, value: Any) -> None:
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    return Stamps


def _sync(device: Any) -> None:
    """Wait for queued device work, so a wall-clock reading covers the work and not just its launch."""
    import torch

    backend = getattr(torch, device.type, None)
    if device.type != "cpu" and hasattr(backend, "synchronize"):
        backend.synchronize()


def _hf_run(model: Any, inputs: dict[str, Any], kwargs: dict[str, Any], spec: BenchSpec, device: Any,
            streamer: bool) -> Sample:
    stamps = _stamps_class()() if streamer else None
    _sync(device)
    start = time.perf_counter()
    out = model.generate(**inputs, **kwargs, streamer=stamps)
    _sync(device)
    latency = time.perf_counter() - start
    sequences = getattr(out, "sequences", out)
    new = int(sequences.shape[-1] - inputs["input_ids"].shape[-1])
    if new < spec.output_tokens:
        raise OellmError(f"bench: generate returned {new} new tokens, {spec.output_tokens} were asked for "
                         "(the model's generation config stops early)")
    # Counted from the end, the put of the first new token, whether or not the prompt was put first.
    ttft = stamps.times[-new] - start if stamps is not None and len(stamps.times) >= new else None
    return run_sample(latency, ttft, spec.batch_size, spec.input_tokens, new)


def default_meter(device_type: str) -> tuple[Meter | None, str]:
    """A GPU meter for GPU work; none for CPU work, where a GPU counter would measure someone else."""
    if device_type == "cpu":
        return None, "no energy meter for device cpu (GPU energy counters only)"
    return open_meter()


def drive(run: Callable[[bool], Sample], spec: BenchSpec, meter: tuple[Meter | None, str],
          streamed: bool) -> Runs:
    """Warm-up, then the timed runs inside one energy and system window (warm-up excluded)."""
    for _ in range(spec.warmup_runs):
        run(streamed)
    with_streamer: list[Sample] = []
    plain: list[Sample] = []
    with SystemSampler() as system, EnergyWindow(meter) as energy:
        for _ in range(spec.num_runs):
            # Interleaved, so a clock or thermal drift over the window moves both sets alike.
            if streamed:
                with_streamer.append(run(True))
            plain.append(run(False))
    tokens = spec.batch_size * sum(s["output_tokens"] for s in with_streamer + plain)
    return Runs(with_streamer, plain, {**energy.fields(tokens), **system.fields()})


def report(runs: Runs, spec: BenchSpec, backend: str) -> dict[str, Any]:
    """The flat, JSON-able result: medians and p90s of the headline runs, the streamer's cost, the window."""
    out = summarize(runs.streamed or runs.plain)
    plain = statistics.median(s["latency_s"] for s in runs.plain)
    out["latency_s_no_streamer"] = plain
    out["streamer_overhead_s"] = out["latency_s"] - plain if runs.streamed else None
    out.update(num_runs=spec.num_runs, warmup_runs=spec.warmup_runs, batch_size=spec.batch_size,
               backend=backend)
    out.update(runs.window)
    return out


def run_hf(model: Any, tokenizer: Any, spec: BenchSpec, device: Any,
           meter: tuple[Meter | None, str] | None = None) -> Runs:
    """The per-run samples of `measure_hf`."""
    import torch

    device = torch.device(device)
    limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and spec.input_tokens + spec.output_tokens > limit:
        raise OellmError(f"bench: {spec.input_tokens} input + {spec.output_tokens} output tokens exceed the "
                         f"model's {limit} positions")
    ids = prompt_ids(model, tokenizer, spec).to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    kwargs = generate_kwargs(model, tokenizer, spec)
    with torch.inference_mode():
        return drive(lambda streamer: _hf_run(model, inputs, kwargs, spec, device, streamer), spec,
                     meter if meter is not None else default_meter(device.type), spec.streamer)


def measure_hf(model: Any, tokenizer: Any, spec: BenchSpec, device: Any,
               meter: tuple[Meter | None, str] | None = None) -> dict[str, Any]:
    """Benchmark a loaded transformers causal LM on `device`. `meter` is `open_meter()`'s answer, to open
    it once per process; without it one is opened here (none for a CPU device)."""
    return report(run_hf(model, tokenizer, spec, device, meter), spec, "hf")


def _vllm_ttft(outputs: list[Any]) -> float | None:
    """The batch's time to first token: when the last row got its first one, as for the hf backend."""
    times = []
    for out in outputs:
        metrics = getattr(out, "metrics", None)
        ttft = getattr(metrics, "first_token_latency", None)  # vLLM V1 RequestStateStats
        if ttft is None and getattr(metrics, "first_token_time", None) is not None:
            ttft = metrics.first_token_time - metrics.arrival_time  # vLLM V0 RequestMetrics
        if ttft is None:
            return None
        times.append(float(ttft))
    return max(times) if times else None


def measure_vllm(model: Any, spec: BenchSpec, dtype: str | None = None,
                 meter: tuple[Meter | None, str] | None = None, **llm_kwargs: Any) -> dict[str, Any]:
    """Benchmark through vLLM's offline `LLM.generate`: `model` is a built `vllm.LLM`, or a model path to
    build one from (with `dtype` and `llm_kwargs`).

    NOT exercised here: vllm is not installed in this image or in the tests. It follows vLLM's documented
    offline API; ttft comes from the request metrics when vLLM fills them in, else it is None.
    """
    try:
        from vllm import LLM, SamplingParams
    except ImportError as exc:
        raise OellmError("backend vllm: vllm is not installed in this image; use backend hf, or a container "
                         "image with vllm") from exc
    llm = LLM(model=str(model), dtype=dtype or "auto", **llm_kwargs) if isinstance(model, (str, Path)) else model
    tokenizer = llm.get_tokenizer()
    rows = random_prompts(len(tokenizer), set(tokenizer.all_special_ids), spec)
    prompts = [{"prompt_token_ids": row} for row in rows]
    params = SamplingParams(max_tokens=spec.output_tokens, min_tokens=spec.output_tokens, temperature=0,
                            ignore_eos=True)

    def run(_streamer: bool) -> Sample:
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        latency = time.perf_counter() - start
        new = min(len(out.outputs[0].token_ids) for out in outputs)
        if new < spec.output_tokens:
            raise OellmError(f"bench: vllm returned {new} new tokens, {spec.output_tokens} were asked for")
        return run_sample(latency, _vllm_ttft(outputs), spec.batch_size, spec.input_tokens, new)

    return report(drive(run, spec, meter if meter is not None else open_meter(), streamed=False), spec, "vllm")
