"""The package's shape: layers that only import downward, no import cycle (imports inside functions
count), modules small enough to read in one sitting."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast
REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 300


def test_layers_contract_is_kept() -> None:
    # in a child process: import-linter configures logging, which would silence loggers of later tests
    code = "from importlinter.cli import lint_imports; raise SystemExit(lint_imports(no_cache=True, no_logo=True))"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr  # the report names every broken import


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan); a self-import is not a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_even_inside_functions() -> None:
    import grimp

    g = grimp.build_graph("oellm", cache_dir=None)  # every import statement, at module level or in a function body
    graph = {m: set(g.find_modules_directly_imported_by(m)) - {m} for m in g.modules}
    assert _cycles(graph) == []


def test_modules_stay_readable_in_one_sitting() -> None:
    long = {str(p.relative_to(REPO)): n for p in sorted((REPO / "oellm").rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_oellm_eval_formats_sit_beside_oellms_own_and_its_flags_at_the_command_line() -> None:
    """oellm-eval's clusters.yaml, language codes, collect CSV and custom task names are read beside oellm's
    own of each kind (no package named by its origin that the core imports back up from); its flags are
    translated only at the command line's edge, so nothing below `oellm.cli` knows their spelling."""
    assert not (REPO / "oellm" / "upstream").exists()
    for module in ("clusters_yaml", "languages", "results/oellm_eval_csv", "suites/lm_eval_include_only"):
        assert (REPO / "oellm" / f"{module}.py").is_file(), module
    below_cli = [p for p in (REPO / "oellm").rglob("*.py")
                 if "cli" not in p.relative_to(REPO / "oellm").parts and p.name != "__main__.py"]
    uses = re.compile(r"from oellm\.cli|import oellm\.cli|\.(?:slurm_template_var|max_array_len|skip_checks)\b")
    assert [str(p.relative_to(REPO)) for p in below_cli if uses.search(p.read_text())] == []
