"""Data-parallel shards of one lm-eval evaluation, merged exactly: shard inference, never scoring.

Every shard builds ALL of the task's requests (so few-shot contexts are the unsharded run's: lm-eval draws
them from one seeded generator in doc order), sends only its own docs' requests to the model
(`doc_id % num_shards == shard`) and records their responses; the others get placeholders nobody reads.
The merge replays the recorded responses through lm-eval itself (`ReplayLM`): lm-eval builds the same
requests, filters, scores and aggregates (stderr, group means, corpus metrics such as bleu, generate_until
tasks) exactly as in one unsharded run, because it sees the same responses.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")
PLACEHOLDER = {"loglikelihood": (0.0, False), "loglikelihood_rolling": 0.0, "generate_until": ""}


def in_shard(doc_id: int, shard: int, num_shards: int) -> bool:
    """Interleaved, so long and short docs spread evenly over the shards."""
    return doc_id % num_shards == shard


def key(req: Any) -> str:
    return f"{req.task_name}\x1f{req.doc_id}\x1f{req.idx}"


@contextmanager
def recording(lm: Any, shard: int, num_shards: int) -> Iterator[dict[str, list]]:
    """Within the block, `lm` answers only this shard's requests; yields {request key: [responses]}."""
    recorded: dict[str, list] = defaultdict(list)

    def wrap(kind: str, method: Any) -> Any:
        def only_ours(requests: list, *args: Any, **kwargs: Any) -> list:
            ours = [i for i, r in enumerate(requests) if in_shard(r.doc_id, shard, num_shards)]
            answers = method([requests[i] for i in ours], *args, **kwargs) if ours else []
            out = [PLACEHOLDER[kind]] * len(requests)
            for i, answer in zip(ours, answers, strict=True):
                out[i] = answer
                recorded[key(requests[i])].append(answer)
            return out

        return only_ours

    kinds = iter(REQUEST_TYPES)  # _patched wraps them in this order
    with _patched(lm, lambda method: wrap(next(kinds), method)):
        yield recorded


@contextmanager
def timing(lm: Any) -> Iterator[list[float]]:
    """Within the block, seconds `lm` spends answering requests accumulate in the yielded list's item: the
    part of an evaluation that shards divide (the rest, building and scoring requests, every shard pays)."""
    spent = [0.0]

    def wrap(method: Any) -> Any:
        def timed(requests: list, *args: Any, **kwargs: Any) -> list:
            t0 = time.perf_counter()
            try:
                return method(requests, *args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t0

        return timed

    with _patched(lm, wrap):
        yield spent


@contextmanager
def _patched(lm: Any, wrap: Any) -> Iterator[None]:
    saved = {kind: lm.__dict__.get(kind) for kind in REQUEST_TYPES}
    for kind in REQUEST_TYPES:  # instance attributes shadow the class's methods for this block only
        setattr(lm, kind, wrap(getattr(lm, kind)))
    try:
        yield
    finally:
        for kind, old in saved.items():
            if old is None:
                delattr(lm, kind)
            else:
                setattr(lm, kind, old)


def replay_lm(responses: dict[str, list]) -> Any:
    """An lm-eval LM answering every request from the shards' records (a missing one is an error)."""
    from lm_eval.api.model import LM

    class ReplayLM(LM):
        def __init__(self) -> None:
            super().__init__()
            self._left = {k: list(v) for k, v in responses.items()}

        def _answer(self, requests: list) -> list:
            out = []
            for r in requests:
                answers = self._left.get(key(r))
                if not answers:
                    raise KeyError(f"no recorded response for {r.task_name} doc {r.doc_id} request {r.idx}")
                out.append(tuple(answers.pop(0)) if isinstance(answers[0], list) else answers.pop(0))
            return out

        def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list:
            return self._answer(requests)

        def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list:
            return self._answer(requests)

        def generate_until(self, requests: list, disable_tqdm: bool = False) -> list:
            return self._answer(requests)

    return ReplayLM()


def merge_responses(shards: list[dict[str, Any]]) -> dict[str, list]:
    """The shards' records as one {request key: [responses]}; shards are disjoint by construction."""
    out: dict[str, list] = {}
    for s in shards:
        out.update(s["responses"])
    return out
