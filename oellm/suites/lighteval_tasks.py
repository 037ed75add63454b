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
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pkgutil
import sys
import types
from collections.abc import Iterable, Sequence
from typing import Any

from oellm.errors import OellmError
from oellm.offline import offline_requested

INSTALL = "pip install 'oellm[lighteval]' (its own venv: it needs transformers<5), or name a lighteval image " \
          "in the cluster's container.images"
# lighteval metrics whose code calls nltk.download at compute time (BLEU: word_tokenize); the nodes are offline
NLTK_BY_METRIC = {"bleu": "punkt_tab", "bleu_1": "punkt_tab", "bleu_4": "punkt_tab"}
MULTILINGUAL = "lighteval.tasks.multilingual.tasks"


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

    name = "lighteval.tasks.tasks.tiny_benchmarks"
    try:
        spec = find_spec("lighteval")
    except ImportError:
        spec = None
    if spec is None or spec.origin is None:
        raise OellmError(f"lighteval rows need lighteval, which is not installed for {sys.executable}: {INSTALL}")
    pkl = os.path.join(os.path.dirname(spec.origin), "tasks", "tasks", "tinyBenchmarks.pkl")
    if name not in sys.modules and not os.path.exists(pkl):
        sys.modules[name] = types.ModuleType(name, "left out: tinyBenchmarks.pkl is not in the installed lighteval")
    if offline_requested(os.environ):
        import nltk

        nltk.download = lambda *a, **k: False
    from lighteval.tasks import registry

    return registry.Registry


_CONFIGS: dict[str | None, dict[str, Any]] = {}
_MULTILINGUAL: list[tuple[dict[str, Any], dict[str, str]]] = []  # (configs, module -> why left out), once


def expand(name: str, configs: dict[str, Any]) -> list[str]:
    """A task, or a superset such as `mmlu` (all `mmlu:*`), as lighteval expands it."""
    return [name] if name in configs else sorted(k for k in configs if k.split(":")[0] == name and ":" in k)


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
        package = importlib.import_module(MULTILINGUAL)
        configs: dict[str, Any] = {}
        left_out: dict[str, str] = {}
        for info in pkgutil.iter_modules(package.__path__):
            try:  # langcodes prints its own install hint to stdout (the probe's answer channel)
                with contextlib.redirect_stdout(io.StringIO()):
                    module = importlib.import_module(f"{MULTILINGUAL}.{info.name}")
            except ImportError as e:  # lighteval's gate for its [multilingual] extra, or langcodes[data]
                left_out[info.name] = " ".join(str(e).split())
                continue
            configs.update({c.name: c for c in getattr(module, "TASKS_TABLE", [])})
        _MULTILINGUAL.append((configs, left_out))
    return _MULTILINGUAL[0]


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


def nltk_resources(names: Sequence[str], sources: Sequence[str]) -> dict[str, list[str]]:
    """NLTK resource -> the leaf tasks whose metrics download it (flores200's bleu_1/bleu_4: punkt_tab)."""
    configs = task_configs(sources, names)
    out: dict[str, list[str]] = {}
    for leaf in sorted({leaf for n in names for leaf in expand(n, configs)}):
        metrics = [m for metric in configs[leaf].metrics
                   for m in (metric.metric_name if isinstance(metric.metric_name, list) else [metric.metric_name])]
        for resource in sorted({NLTK_BY_METRIC[m] for m in metrics if m in NLTK_BY_METRIC}):
            out.setdefault(resource, []).append(leaf)
    return out
