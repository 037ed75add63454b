"""A bench row's workload as its task name, e.g.
`backend=hf,batch_size=8,input_tokens=128,output_tokens=128,num_runs=5,warmup_runs=2,data=random`:
written by planning into jobs.csv, read back by the worker's bench suite, shown by status and collect.
One spelling, parsed here only."""

from __future__ import annotations

from dataclasses import dataclass, fields

from oellm.errors import OellmError

BACKENDS = ("hf", "vllm")


@dataclass(frozen=True)
class Workload:
    backend: str = "hf"
    batch_size: int = 1
    input_tokens: int = 128
    output_tokens: int = 128
    num_runs: int = 5
    warmup_runs: int = 2
    data: str = "random"
    streamer: bool = True

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise OellmError(f"bench backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        for name, low in (("batch_size", 1), ("input_tokens", 1), ("output_tokens", 1), ("num_runs", 1),
                          ("warmup_runs", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise OellmError(f"bench {name}: must be an integer >= {low}, got {value!r}")
        if self.data != "random":
            raise OellmError(f"bench data {self.data!r}: only `random` (random token ids of a fixed length) is "
                             "supported")

    @property
    def task(self) -> str:
        return ",".join(f"{f.name}={_text(getattr(self, f.name))}" for f in fields(self))

    @classmethod
    def parse(cls, task: str) -> Workload:
        """The inverse of `task`; a name that is not a workload is one clear error."""
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for part in task.split(","):
            key, eq, value = part.partition("=")
            if not eq or key not in kinds:
                raise OellmError(f"bench task {task!r}: {part!r} is not one of {', '.join(kinds)} as key=value")
            try:
                values[key] = (value in ("1", "true") if kinds[key] in (bool, "bool")
                               else int(value) if kinds[key] in (int, "int") else value)
            except ValueError:
                raise OellmError(f"bench task {task!r}: {key} must be an integer, got {value!r}") from None
        return cls(**values)  # type: ignore[arg-type]


def _text(value: object) -> str:
    return ("1" if value else "0") if isinstance(value, bool) else str(value)
