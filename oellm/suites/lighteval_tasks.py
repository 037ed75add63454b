"""lighteval's task registry as oellm reads it: every name lighteval knows (its base tasks, the run's custom
file, and on demand its *multilingual* tasks: `flores200:eng_Latn-deu_Latn`, `belebele_deu_Latn_cf`, ...),
each with the dataset it loads and the NLTK data its metrics download.

lighteval 0.13's own switch, `load_all_task_configs(load_multilingual=True)` (the CLI's
`--load-tasks-multilingual`), imports all 83 multilingual modules or fails: 26 of them call
`get_multilingual_normalizer` at import, which refuses unless every package of `lighteval[multilingual]` is
installed (stanza, spacy, jieba, pyvi: ~600 MB with spacy's ja/ko/th extras), and 2 import `language_data`
(`langcodes[data]`). flores200 and belebele need none of them (langcodes, sacrebleu and nltk are lighteval's
own dependencies). So the multilingual modules are imported one by one here, and a module that needs the
extra is left out with its reason, named when a requested task is not found.

Planning reads a `Table`: the names a lighteval knows and, per task, what planning needs of it (`TaskFacts`),
taken here from lighteval itself or, on a login node without it, from oellm's shipped index
(`oellm.suites.lighteval_index`, built by `facts_of` below from the pinned lighteval).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pkgutil
import sys
import types
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from oellm.errors import OellmError
from oellm.offline import offline_requested

INSTALL = "pip install 'oellm[lighteval]' (its own venv: it needs transformers<5), or name a lighteval image " \
          "in the cluster's container.images"
# lighteval metrics whose code calls nltk.download at compute time (BLEU: word_tokenize); the nodes are offline
NLTK_BY_METRIC = {"bleu": "punkt_tab", "bleu_1": "punkt_tab", "bleu_4": "punkt_tab"}
MULTILINGUAL = "lighteval.tasks.multilingual.tasks"
TINY = "lighteval.tasks.tasks.tiny_benchmarks"  # downloads tinyBenchmarks.pkl into the package at import


def custom_tasks(sources: Sequence[str]) -> str | None:
    """The lighteval custom-task file among a run's task sources (`--lighteval_custom_tasks`), if any."""
    files = [s for s in sources if s.endswith(".py")]
    if len(files) > 1:
        raise OellmError(f"--lighteval_custom_tasks: one file, got {len(files)}: {', '.join(files)}")
    return files[0] if files else None


def offline_import() -> Any:
    """lighteval's registry, imported so that no import reaches for the network: the tinyBenchmarks
    module downloads its pickle into the installed package at import (an error offline or in a read-only
    image: its tasks are left out unless the image has the file), and nltk.download is a no-op offline
    (its data must be in NLTK_DATA: `nltk_resources` names it for the pre-cache)."""
    from importlib.util import find_spec

    try:
        spec = find_spec("lighteval")
    except ImportError:
        spec = None
    if spec is None or spec.origin is None:
        raise OellmError(f"lighteval rows need lighteval, which is not installed for {sys.executable}: {INSTALL}")
    pkl = os.path.join(os.path.dirname(spec.origin), "tasks", "tasks", "tinyBenchmarks.pkl")
    if TINY not in sys.modules and not os.path.exists(pkl):
        sys.modules[TINY] = types.ModuleType(TINY, "left out: tinyBenchmarks.pkl is not in the installed lighteval")
    if offline_requested(os.environ):
        import nltk

        nltk.download = lambda *a, **k: False
    from lighteval.tasks import registry

    return registry.Registry


_CONFIGS: dict[str | None, dict[str, Any]] = {}
_MULTILINGUAL: list[tuple[dict[str, Any], dict[str, str]]] = []  # (configs, module -> why left out), once


def expand(name: str, configs: Collection[str]) -> list[str]:
    """A task, or a superset such as `mmlu` (all `mmlu:*`), as lighteval expands it."""
    return [name] if name in configs else sorted(k for k in configs if k.split(":")[0] == name and ":" in k)


@dataclass(frozen=True)
class TaskFacts:
    """What planning needs of one lighteval task: the dataset lighteval's `download_dataset_worker` loads,
    the NLTK data its metrics download, and for a multilingual task whose module needs the
    `lighteval[multilingual]` extra, that module (the image must have the extra to run it)."""

    hf_repo: str
    hf_subset: str | None
    hf_revision: str | None = None
    nltk: tuple[str, ...] = ()
    extra: str | None = None

    def dataset(self) -> dict[str, Any]:
        """As the pre-cache asks for it (`Suite.datasets`)."""
        return {"dataset_path": self.hf_repo, "dataset_name": self.hf_subset,
                "dataset_kwargs": {"revision": self.hf_revision} if self.hf_revision else {}}


def facts_of(config: Any, extra: str | None = None) -> TaskFacts:
    """A LightevalTaskConfig's planning facts: the one place they are read, for the live registry and
    for the shipped index alike."""
    metrics = [m for metric in config.metrics
               for m in (metric.metric_name if isinstance(metric.metric_name, list) else [metric.metric_name])]
    return TaskFacts(config.hf_repo, config.hf_subset, config.hf_revision or None,
                     tuple(sorted({NLTK_BY_METRIC[m] for m in metrics if m in NLTK_BY_METRIC})), extra)


@dataclass
class Table:
    """The task names a lighteval knows (`names`: a dict's keys will do) and each task's facts."""

    names: Collection[str]
    facts: Callable[[str], TaskFacts]
    hint: Callable[[], str] = field(default=lambda: "")  # what an unknown name may be, asked on an error

    @cached_property
    def _supersets(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k in self.names:
            if ":" in k:
                out.setdefault(k.split(":")[0], []).append(k)
        return {k: sorted(v) for k, v in out.items()}

    def expand(self, name: str) -> list[str]:
        """As `expand`, in one pass over the names however many are asked (~51k with the multilingual ones)."""
        return [name] if name in self.names else self._supersets.get(name, [])

    def leaves(self, names: Iterable[str]) -> list[str]:
        return sorted({leaf for n in names for leaf in self.expand(n)})


def table(sources: Sequence[str], names: Iterable[str] = ()) -> Table:
    """lighteval's own registry (with the run's custom file) as a Table."""
    configs = task_configs(sources, names)
    return Table(configs, lambda leaf: facts_of(configs[leaf]), unknown_hint)


def task_configs(sources: Sequence[str], names: Iterable[str] = ()) -> dict[str, Any]:
    """Every task lighteval knows (with the custom file's), name -> LightevalTaskConfig: under 1 s after
    lighteval's ~7 s import. The multilingual tasks (~51k names, 3.3-3.8 s more here) only when one of `names`
    is not found without them, so runs of base tasks pay nothing for them."""
    custom = custom_tasks(sources)
    if custom not in _CONFIGS:
        _CONFIGS[custom] = offline_import().load_all_task_configs(custom_tasks=custom)
    configs = _CONFIGS[custom]
    if any(not expand(n, configs) for n in names):
        return {**multilingual()[0], **configs}
    return configs


def multilingual() -> tuple[dict[str, Any], dict[str, str]]:
    """lighteval's multilingual task configs, module by module, and the modules left out with why."""
    if not _MULTILINGUAL:
        offline_import()
        configs: dict[str, Any] = {}
        left_out: dict[str, str] = {}
        for name in _multilingual_modules():
            try:
                module = _import_multilingual(name)
            except ImportError as e:  # lighteval's gate for its [multilingual] extra, or langcodes[data]
                left_out[name] = " ".join(str(e).split())
                continue
            configs.update({c.name: c for c in getattr(module, "TASKS_TABLE", [])})
        _MULTILINGUAL.append((configs, left_out))
    return _MULTILINGUAL[0]


def _multilingual_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(importlib.import_module(MULTILINGUAL).__path__))


def _import_multilingual(name: str) -> types.ModuleType:
    with contextlib.redirect_stdout(io.StringIO()):  # langcodes prints its own install hint to stdout
        return importlib.import_module(f"{MULTILINGUAL}.{name}")


def every_task() -> tuple[dict[str, TaskFacts], dict[str, str]]:
    """Every task of the lighteval installed here, for oellm's shipped index (run in a fresh process), and
    the multilingual modules left out with why. The modules behind the `lighteval[multilingual]` extra are
    listed too: lighteval's gate (`raise_if_package_not_available`) guards building a normaliser, not
    listing tasks, so it only records here that a module asked for the extra, installed or not. A module
    that needs more to name its tasks (`langcodes[data]`: m3exams, xnli2) is left out, and so are the
    tinyBenchmarks tasks, whether or not this install has their pickle (images mostly do not)."""
    sys.modules.setdefault(TINY, types.ModuleType(TINY, "left out of oellm's index"))
    offline_import()
    from lighteval.utils import imports as gate

    out: dict[str, TaskFacts] = {}
    left_out: dict[str, str] = {}
    check, asked = gate.raise_if_package_not_available, []
    gate.raise_if_package_not_available = lambda *a, **k: asked.append(a)
    try:
        for name in _multilingual_modules():
            asked.clear()
            try:
                module = _import_multilingual(name)
            except ImportError as e:
                left_out[name] = f"needs {e.name}" if isinstance(e, ModuleNotFoundError) and e.name else \
                    " ".join(str(e).split())
                continue
            extra = name if asked else None
            out.update({c.name: facts_of(c, extra) for c in getattr(module, "TASKS_TABLE", [])})
    finally:
        gate.raise_if_package_not_available = check
    out.update({n: facts_of(c) for n, c in task_configs([]).items()})  # a base task wins, as in task_configs
    return out, {**left_out, "tiny_benchmarks": "its tasks need tinyBenchmarks.pkl in the image"}


def unknown_hint() -> str:
    """What an unknown name may be: a task of a multilingual module this environment cannot import."""
    left_out = multilingual()[1] if _MULTILINGUAL else {}
    if not left_out:
        return ""
    return (f"; lighteval's multilingual modules {', '.join(sorted(left_out))} cannot load here without "
            "pip install 'lighteval[multilingual]' 'langcodes[data]'")


def pipeline_tasks(task: str, sources: Sequence[str]) -> str | types.ModuleType | None:
    """What a Pipeline for `task` is given as its custom tasks: the run's custom file, or for a multilingual
    task a module holding its configs. The Pipeline's own `load_tasks_multilingual=True` would import every
    multilingual module, all or nothing (see the module docstring); the configs are the same objects."""
    custom = custom_tasks(sources)
    if expand(task, task_configs(sources)):
        return custom
    configs = task_configs(sources, [task])
    module = types.ModuleType("oellm_lighteval_multilingual", "lighteval's multilingual configs of one row")
    module.TASKS_TABLE = [configs[leaf] for leaf in expand(task, configs)]  # type: ignore[attr-defined]
    return module


def nltk_resources(tasks: Table, names: Sequence[str]) -> dict[str, list[str]]:
    """NLTK resource -> the leaf tasks whose metrics download it (flores200's bleu_1/bleu_4: punkt_tab)."""
    out: dict[str, list[str]] = {}
    for leaf in tasks.leaves(names):
        for resource in tasks.facts(leaf).nltk:
            out.setdefault(resource, []).append(leaf)
    return out
