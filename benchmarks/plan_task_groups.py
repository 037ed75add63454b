"""Benchmark: `oellm schedule --task_groups all` over a registry as large as oellm-eval's (26 groups, 448 task
entries, most written with valid_langs/{lang}) for 20 checkpoints, as a whole `--dry_run` process.

    python benchmarks/plan_task_groups.py [--checkpoints 20] [--repeat 3] [--stock]

The registry has oellm-eval's group sizes; its tasks are tiny lm-eval YAMLs in an include dir (as
oellm-eval's custom task files are), or with --stock 448 of lm-eval's own tasks (no include dir); all
lm-eval, since the login node has no lighteval here (its rows would be asked of the lighteval image).
Prints rows planned and wall time per run (target < 2 s).
"""

from __future__ import annotations

import argparse
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


def build(root: Path, checkpoints: int, stock: bool = False) -> tuple[Path, Path | None, Path, int]:
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
    return registry, tasks_dir, run, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoints", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stock", action="store_true", help="lm-eval's own tasks instead of an include dir")
    ap.add_argument("extra", nargs="*", help="more schedule flags after --, e.g. -- --confirm_run_unsafe_code")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry, tasks_dir, run, n = build(root, args.checkpoints, args.stock)
        print(f"registry: {len(SIZES)} groups, {n} task entries; {args.checkpoints} checkpoints")
        times = []
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
            t0 = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode:
                sys.exit(proc.stderr)
            rows = next(line for line in proc.stdout.splitlines() if line.startswith("rows:"))
            print(f"run {i}{' (cold task index)' if i == 0 else ''}: {wall:.2f} s  {rows}")
            if i:
                times.append(wall)
        print(
            f"whole-process dry run, --task_groups all: median {statistics.median(times):.2f} s (target < 2 s)"
        )


if __name__ == "__main__":
    main()
