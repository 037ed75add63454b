"""Benchmark: `oellm schedule --task_groups all` over a registry as large as oellm-eval's (26 groups, 448 task
entries, most written with valid_langs/{lang}) for 20 checkpoints, as a whole `--dry_run` process.

    python benchmarks/plan_task_groups.py [--checkpoints 20] [--repeat 3] [--stock] [--upstream EXE]

The registry has oellm-eval's group sizes; its tasks are tiny lm-eval YAMLs in an include dir (as
oellm-eval's custom task files are), or with --stock 448 of lm-eval's own tasks (no include dir); all
lm-eval, since the login node has no lighteval here (its rows would be asked of the lighteval image).
Prints rows planned and wall time per run (target < 2 s).

--upstream times oellm-eval's own `oellm-eval schedule` (installed in a venv of its own: both packages
are named `oellm`) on the same plan, run after ours in each round: `--local true --skip_checks true
--dry_run true`, so it neither needs SLURM nor touches the network. It reads its registry only from its
package's resources (no flag), so the benchmark copies that package into the temp dir with the
generated registry in place and puts the copy first on PYTHONPATH; it expands a run dir only into
subdirs that hold *.safetensors, so each checkpoint also gets an empty model.safetensors (both tools
then plan the same tree). Its rows are counted in the jobs.csv it writes.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# oellm-eval's groups at 238bea9: (name, tasks, shots)
SIZES = [
    ("sib200-eu", 36, 0),
    ("open-sci-0.01", 12, 10),
    ("belebele-eu-5-shot", 24, 5),
    ("belebele-eu-cf", 26, 0),
    ("xcsqa-eu", 8, 0),
    ("pawsx-eu", 4, 0),
    ("xnli-eu", 6, 0),
    ("flores-200-eu-to-eng", 35, 0),
    ("flores-200-eng-to-eu", 35, 0),
    ("global-mmlu-eu", 18, 5),
    ("mmlu-prox-eu", 10, 5),
    ("mgsm-eu", 4, 5),
    ("global-mgsm-eu", 11, 0),
    ("generic-multilingual", 3, 0),
    ("include", 25, 0),
    ("dclm-core-22", 21, 0),
    ("opensubtitles-eu-en-xx", 25, 0),
    ("opensubtitles-eu-xx-en", 25, 0),
    ("arc-challenge-mt-eu", 22, 0),
    ("reasoning", 10, 0),
    ("global-piqa-eu-completions", 32, 0),
    ("global-piqa-eu-prompted", 32, 0),
    ("polymath-eu-low", 6, 0),
    ("polymath-eu-medium", 6, 0),
    ("polymath-eu-high", 6, 0),
    ("polymath-eu-top", 6, 0),
]
LANGS = [
    "bul_Cyrl",
    "hrv_Latn",
    "ces_Latn",
    "dan_Latn",
    "nld_Latn",
    "eng_Latn",
    "est_Latn",
    "fin_Latn",
    "fra_Latn",
    "deu_Latn",
    "ell_Grek",
    "hun_Latn",
    "gle_Latn",
    "ita_Latn",
    "lvs_Latn",
    "lit_Latn",
    "mlt_Latn",
    "pol_Latn",
    "por_Latn",
    "ron_Latn",
    "slk_Latn",
    "slv_Latn",
    "spa_Latn",
    "swe_Latn",
    "cat_Latn",
    "eus_Latn",
    "glg_Latn",
    "bos_Latn",
    "kat_Geor",
    "mkd_Cyrl",
    "als_Latn",
    "srp_Cyrl",
    "tur_Latn",
    "ukr_Cyrl",
    "isl_Latn",
    "nob_Latn",
    "heb_Hebr",
    "rus_Cyrl",
]


def build(
    root: Path, checkpoints: int, stock: bool = False, weights: bool = False
) -> tuple[Path, Path | None, Path, int]:
    from oellm.suites.lm_eval_tasks import task_index
    from tests.fixtures_models import build_tiny_tasks, mc_task_yaml

    tasks_dir = None if stock else build_tiny_tasks(root / "tasks")
    source = (
        "" if stock else (tasks_dir / "tiny_mc_a.yaml").read_text().split("output_type:")[0].split("\n", 1)[1]
    )
    known = iter(sorted(n for n, e in task_index([]).items() if e["type"] == "task")) if stock else None
    lines = ["task_groups:"]
    n = 0
    for name, size, shots in SIZES:
        stem = name.replace("-", "_").replace(".", "_")
        lines += [
            f"  {name}:",
            f"    description: {name}",
            "    suite: lm-eval-harness",
            f"    n_shots: [{shots}]",
        ]
        if known:
            lines += ["    tasks:", *(f"      - task: {next(known)}" for _ in range(size))]
        else:
            lines += [
                f"    valid_langs: [{', '.join(LANGS[:size])}]",
                "    tasks:",
                f'      - task: "{stem}_{{lang}}"',
                '        subset: "{lang}"',
            ]
            for lang in LANGS[:size]:
                (tasks_dir / f"{stem}_{lang}.yaml").write_text(mc_task_yaml(f"{stem}_{lang}", source))
        n += size
    registry = root / "task-groups.yaml"
    registry.write_text("\n".join(lines) + "\n")
    run = root / "run7"
    for step in range(1, checkpoints + 1):
        d = run / f"checkpoint-{step * 1000}"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        if weights:  # oellm-eval counts a dir as a model only if it holds *.safetensors
            (d / "model.safetensors").write_bytes(b"")
    return registry, tasks_dir, run, n


def upstream_command(exe: str, root: Path, registry: Path) -> tuple[list[str], dict[str, str]]:
    """oellm-eval's dry run of `--task_groups all` over `registry`, and the environment it needs.

    Its registry is read from its package's resources only, so the package is copied under `root`
    with `registry` in its place and put first on PYTHONPATH (the console script does not put the
    working directory on sys.path, so our own `oellm` never shadows it).
    """
    exe = str(Path(shutil.which(exe) or exe).absolute())  # it runs from a temp dir
    python = Path(exe).read_text().splitlines()[0].removeprefix("#!").strip()  # the venv's interpreter
    where = subprocess.run(
        [python, "-c", "import oellm.main as m, pathlib; print(pathlib.Path(m.__file__).parent)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    ).stdout.strip()
    shadow = root / "upstream-pkg"
    shutil.copytree(where, shadow / "oellm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(registry, shadow / "oellm" / "resources" / "task-groups.yaml")
    env = {**os.environ, "PYTHONPATH": str(shadow), "HF_HUB_OFFLINE": "1"}
    venv = str(Path(python).parent.parent)
    flags = ["--local", "true", "--venv_path", venv, "--skip_checks", "true", "--dry_run", "true"]
    return [exe, "schedule", "--task_groups", "all", *flags], env


def timed(argv: list[str], **kwargs) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """One whole process: its result, wall time and CPU time (user + sys; steadier on a shared machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def time_upstream(argv: list[str], env: dict[str, str], run: Path, cwd: Path) -> tuple[float, float, int]:
    """Wall and CPU time of one whole oellm-eval process, and the rows of the jobs.csv it wrote."""
    cwd.mkdir()
    proc, wall, cpu = timed([*argv, "--models", str(run)], env=env, cwd=cwd)
    jobs = list(cwd.glob("oellm-output/*/jobs.csv"))
    if proc.returncode or len(jobs) != 1:
        sys.exit(f"oellm-eval failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return wall, cpu, len(jobs[0].read_text().splitlines()) - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoints", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stock", action="store_true", help="lm-eval's own tasks instead of an include dir")
    ap.add_argument("--upstream", metavar="EXE", help="oellm-eval's executable: time it on the same plan too")
    ap.add_argument(
        "extra", nargs="*", help="more schedule flags after --, e.g. -- --confirm_run_unsafe_code"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry, tasks_dir, run, n = build(root, args.checkpoints, args.stock, weights=bool(args.upstream))
        print(f"registry: {len(SIZES)} groups, {n} task entries; {args.checkpoints} checkpoints")
        upstream = upstream_command(args.upstream, root, registry) if args.upstream else None
        times, upstream_times = [], []
        for i in range(args.repeat + 1):  # the first run also builds the include dir's task index
            argv = [
                sys.executable,
                "-m",
                "oellm",
                "schedule",
                "--models",
                str(run),
                "--task_groups",
                "all",
                "--task_groups_file",
                str(registry),
                "--local",
                "--skip_checks",
                "--dry_run",
                "--output_dir",
                str(root / f"out{i}"),
                *(["--lm_eval_include_path", str(tasks_dir)] if tasks_dir else []),
                *args.extra,
            ]
            proc, wall, cpu = timed(argv)
            if proc.returncode:
                sys.exit(proc.stderr)
            rows = next(line for line in proc.stdout.splitlines() if line.startswith("rows:"))
            print(f"run {i}{' (cold task index)' if i == 0 else ''}: {wall:.2f} s (cpu {cpu:.2f} s)  {rows}")
            if i:
                times.append(wall)
            if upstream:
                up_wall, up_cpu, up_rows = time_upstream(*upstream, run, root / f"upstream{i}")
                print(f"        oellm-eval: {up_wall:.2f} s (cpu {up_cpu:.2f} s)  rows: {up_rows}")
                if i:
                    upstream_times.append(up_wall)
        print(
            f"whole-process dry run, --task_groups all: median {statistics.median(times):.2f} s (target < 2 s)"
        )
        if upstream_times:
            print(f"oellm-eval, same plan, whole process: median {statistics.median(upstream_times):.2f} s")


if __name__ == "__main__":
    main()
