"""collect-results --html: one self-contained page of a campaign, checked for its embedded data (fast) and
in a real headless Chromium (e2e): it loads without a JavaScript error, shows the models, tasks, values
and states, sorts and filters, and draws something.

The browser is Debian's chromium + chromium-driver driven by selenium. Like the SLURM fixture, the session
fixture installs them with apt when they are missing and it may (root); in CI a missing browser fails."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oellm import cli
from oellm.results.gather import collect
from oellm.results.tables import board
from oellm.rows import EvalRow
from oellm.rundir import RunDir, write_json
from oellm.task_groups import load_task_groups
from tests.conftest import missing_part
from tests.fixtures_models import make_run_dir
from tests.test_collect import fake

BROWSER_PACKAGES = ("chromium", "chromium-driver")
TASKS = ("xnli_de", "xnli_fr", "xnli_es", "t_mc")
GROUPS = "task_groups:\n  xnli-eu:\n    n_shots: [0]\n    tasks:\n      - task: xnli_de\n      - task: xnli_fr\n" \
         "      - task: xnli_es\n"


@dataclass
class Campaign:
    run: RunDir
    html: Path
    groups: Path
    oom: EvalRow  # failed: its state record says CUDA OOM
    pending: EvalRow  # planned, no result, no record
    unstarted: EvalRow  # a checkpoint with no result at all: only in the missing list


def make_campaign(tmp: Path) -> Campaign:
    """Two training runs x 3 checkpoints x 4 tasks (3 of them one multilingual group), two rows without a
    result (one failed with OOM), one planned checkpoint never evaluated; report written by the CLI."""
    rows = [EvalRow(f"/scratch/{run}/checkpoint-{step}", t, 0, step=step)
            for run in ("runA", "runB") for step in (100, 200, 300) for t in TASKS]
    unstarted = EvalRow("/scratch/runB/checkpoint-400", "xnli_de", 0, step=400)
    run = make_run_dir(tmp, [*rows, unstarted])
    rng = random.Random(7)
    *done, pending, oom = rows
    for r in done:
        write_json(run.result_path(r.row_id), fake(r, "2025-01-01T00:00:00+00:00", acc=round(rng.uniform(0, 0.6), 4),
                                                   **{"acc_norm_stderr,none": 0.02}))
    run.write_state(oom.row_id, {"state": "failed", "error_kind": "oom", "error": "CUDA out of memory (batch 64)"})
    groups = tmp / "groups.yaml"
    groups.write_text(GROUPS)
    html = tmp / "report" / "campaign.html"
    cli.main(["collect-results", str(run.path), "--html", str(html), "--task_groups_file", str(groups),
              "--format", "none"])
    return Campaign(run, html, groups, oom, pending, unstarted)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    return make_campaign(tmp_path_factory.mktemp("report"))


def embedded(html: Path) -> dict[str, Any]:
    text = html.read_text()
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
    assert m, "no embedded data"
    return json.loads(m.group(1))


def expected_board(c: Campaign) -> Any:
    return board(collect([c.run.path]).table, groups=load_task_groups(c.groups).groups)


# ---------------------------------------------------------------- fast: the data the page embeds


@pytest.mark.fast
def test_the_page_embeds_every_leaderboard_value_with_its_provenance(campaign: Campaign) -> None:
    data, b = embedded(campaign.html), expected_board(campaign)
    assert [c["name"] for c in data["columns"]] == list(b.table.columns) == [
        "t_mc acc_norm", "xnli_de acc_norm", "xnli_es acc_norm", "xnli_fr acc_norm", "avg xnli-eu", "average"]
    assert [r["label"] for r in data["rows"]] == list(b.table.index) == [
        f"{run}@step{s}" for run in ("runA", "runB") for s in (100, 200, 300)]
    cells = data["cells"]
    seen = {}
    for r, c, v, e, p, f in zip(cells["r"], cells["c"], cells["v"], cells["e"], cells["p"], cells["f"], strict=True):
        seen[(data["rows"][r]["label"], data["columns"][c]["name"])] = v
        name, date = cells["files"][f]
        assert (campaign.run.results / name).is_file() and date == "2025-01-01T00:00:00+00:00"
        assert e == 0.02 and data["prov"][p]["run"] == campaign.run.path.name
        assert data["prov"][p]["dir"] == str(campaign.run.results) and data["prov"][p]["lm_eval_version"] == "0.4.13"
    tasks = b.table[list(b.columns)].stack().dropna()
    assert seen == pytest.approx(tasks.to_dict()) and len(seen) == 4 * 6 - 2  # no tidy rows: one entry per cell
    for j, values in cells["avg"].items():
        name = data["columns"][int(j)]["name"]
        assert values == pytest.approx([None if x != x else x for x in b.table[name]], abs=1e-6)
    de = next(c for c in data["columns"] if c["name"] == "xnli_de acc_norm")
    assert de["groups"] == ["xnli-eu"] and de["langs"] == ["deu_Latn"] and de["n_shot"] == 0


@pytest.mark.fast
def test_cells_without_a_result_carry_their_state_and_the_missing_list_replans(campaign: Campaign) -> None:
    data = embedded(campaign.html)
    st = data["status"]
    marked = {(data["rows"][r]["label"], data["columns"][c]["name"]): (s, why)
              for r, c, s, why in zip(st["r"], st["c"], st["s"], st["why"], strict=True)}
    assert marked == {("runB@step300", "t_mc acc_norm"): ("oom", f"oom: CUDA out of memory (batch 64) ({campaign.run.path})"),
                      ("runB@step300", "xnli_es acc_norm"): ("pending", f"({campaign.run.path})")}
    [m] = data["missing"]
    assert m["count"] == 3 and {r["row_id"] for r in m["rows"]} == {
        campaign.oom.row_id, campaign.pending.row_id, campaign.unstarted.row_id}
    assert m["commands"] == [f"oellm collect-results {campaign.run.path} --check",
                             f"oellm schedule-eval --eval_csv_path {campaign.run.path}/missing.csv"]


@pytest.mark.fast
def test_a_multilingual_group_gets_a_language_view_of_each_runs_last_checkpoint(campaign: Campaign) -> None:
    [view] = embedded(campaign.html)["languages"]
    b = expected_board(campaign)
    assert view["group"] == "xnli-eu" and view["langs"] == ["deu_Latn", "fra_Latn", "spa_Latn"]
    assert view["models"] == ["runA@step300", "runB@step300"]
    de = b.table.loc["runA@step300", "xnli_de acc_norm"]
    assert view["matrix"][0][0] == pytest.approx(de, abs=1e-4) and view["matrix"][2][1] is None  # runB's es: pending


@pytest.mark.fast
def test_the_page_is_one_file_that_needs_nothing_else(campaign: Campaign, tmp_path: Path) -> None:
    text = campaign.html.read_text()
    markup = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)  # plotly.js's own code names URLs
    assert "<script src" not in text and not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", markup)
    assert "<link" not in text and "@import" not in text and "plotly.js v" in text  # the charting library inline
    row = EvalRow("org/m", "evil</script><script>alert(1)</script>", 0)
    d = tmp_path / "evil"
    d.mkdir()
    write_json(d / "r.json", fake(row, "2025-01-01"))
    out = tmp_path / "evil.html"
    cli.main(["collect-results", str(d), "--html", str(out), "--format", "none"])
    assert "<script>alert" not in out.read_text()
    assert embedded(out)["columns"][0]["task"] == row.task  # escaped, and read back whole


# ---------------------------------------------------------------- e2e: a real browser


def _install_browser() -> str | None:
    """None when chromium and chromedriver are there (installed with apt if need be), else why not."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return None
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return f"chromium/chromedriver not found and no root apt-get to install {' '.join(BROWSER_PACKAGES)}"
    log = Path(tempfile.gettempdir()) / "oellm-browser-apt.log"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(log, "w") as fh:
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *BROWSER_PACKAGES]):
            if subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=900).returncode:
                return f"{' '.join(cmd)} failed, see {log}"
    return None if shutil.which("chromium") and shutil.which("chromedriver") else f"installed, still not found ({log})"


def start_browser(width: int = 1400, height: int = 1000) -> Any:
    """Headless Chromium through chromedriver, console logs kept (no Selenium Manager: no network)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium") or "chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    problem = _install_browser()
    if problem:
        missing_part(f"headless Chromium: {problem}")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing_part("selenium (pip install -e '.[test]')")
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: Any, page: Path, timeout_s: float = 10) -> float:
    """Load the page; seconds until its script has rendered the table (body[data-ready])."""
    t0 = time.perf_counter()
    driver.get(page.resolve().as_uri())
    while driver.execute_script("return document.body && document.body.dataset.ready") != "1":
        assert time.perf_counter() - t0 < timeout_s, "the page's script never finished"
        time.sleep(0.02)
    return time.perf_counter() - t0


def wait_for(driver: Any, condition: str, timeout_s: float = 10) -> float:
    """Seconds until a JavaScript condition holds."""
    t0 = time.perf_counter()
    while not driver.execute_script(f"return {condition}"):
        assert time.perf_counter() - t0 < timeout_s, f"never true: {condition}"
        time.sleep(0.02)
    return time.perf_counter() - t0


def _labels(driver: Any) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#board tbody td.label')].map(e => e.textContent)")


def _heads(driver: Any) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#board thead th')].map(e => e.textContent)")


def _column(driver: Any, name: str) -> list[str]:
    j = _heads(driver).index(name)
    return driver.execute_script(
        "return [...document.querySelectorAll('#board tbody tr')].map(r => r.children[arguments[0]].textContent)", j)


@pytest.mark.e2e
def test_the_report_in_a_real_browser(browser: Any, campaign: Campaign, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    open_page(d, campaign.html)
    assert [e for e in d.get_log("browser") if e["level"] == "SEVERE"] == []  # no JavaScript error
    assert d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)") == []  # offline
    b = expected_board(campaign)
    assert _heads(d) == ["model", *b.table.columns] and _labels(d) == list(b.table.index)
    value = b.table.loc["runA@step200", "xnli_fr acc_norm"]
    cell = d.find_elements(By.CSS_SELECTOR, "#board tbody tr")[1].find_elements(By.TAG_NAME, "td")[4]
    assert cell.text == f"{value:.4f}" and cell.get_attribute("title") == "± 0.0200 (stderr)"
    oom = d.find_elements(By.CSS_SELECTOR, "#board tbody tr")[5].find_elements(By.TAG_NAME, "td")[1]
    assert oom.text == "oom" and "CUDA out of memory" in oom.get_attribute("title")

    cell.click()  # provenance of that value
    prov = d.find_element(By.ID, "prov").text
    assert str(campaign.run.results) in prov and "0.4.13" in prov and "none (full)" in prov

    d.find_element(By.XPATH, "//table[@id='board']//th[text()='average']").click()  # best first
    averages = b.table["average"].dropna().sort_values(ascending=False)
    assert _labels(d)[:len(averages)] == list(averages.index) and _column(d, "average")[-1] == ""
    d.find_element(By.XPATH, "//table[@id='board']//th[text()='average']").click()  # again: worst first
    assert _labels(d)[:len(averages)] == list(averages.index[::-1])

    d.find_element(By.ID, "f-model").send_keys("runB")
    assert _labels(d) == ["runB@step100", "runB@step200", "runB@step300"]
    d.find_element(By.ID, "f-model").clear()
    d.find_element(By.ID, "f-last").click()
    assert _labels(d) == ["runA@step300", "runB@step300"]
    d.find_element(By.ID, "f-last").click()
    Select(d.find_element(By.ID, "f-group")).select_by_value("xnli-eu")
    assert _heads(d) == ["model", "xnli_de acc_norm", "xnli_es acc_norm", "xnli_fr acc_norm", "avg xnli-eu"]
    Select(d.find_element(By.ID, "f-group")).select_by_value("")
    Select(d.find_element(By.ID, "f-lang")).select_by_value("fra_Latn")
    assert _heads(d) == ["model", "xnli_fr acc_norm", "avg xnli-eu", "average"]
    assert [e for e in d.get_log("browser") if e["level"] == "SEVERE"] == []

    # charts: each average's learning curves, one line per training run, with error bars; a picked column.
    # plotly.js runs when a chart section comes into view
    d.execute_script("document.getElementById('curves').scrollIntoView()")
    wait_for(d, "document.body.dataset.charts === '1'")
    avg_charts = d.execute_script("return [...document.querySelectorAll('#curves-avg .js-plotly-plot')]"
                                  ".map(p => [p.layout.title.text, p.data.map(t => t.name), p.data[0].error_y.array])")
    assert [(t, names) for t, names, _ in avg_charts] == [("avg xnli-eu", ["runA", "runB"]), ("average", ["runA", "runB"])]
    assert avg_charts[0][2][0] == pytest.approx((3 * 0.02 ** 2) ** 0.5 / 3)
    Select(d.find_element(By.ID, "curve-col")).select_by_visible_text("xnli_es acc_norm")
    picked = d.execute_script("const p = document.getElementById('curve-pick'); return [p.layout.title.text, p.data.map(t => [t.x, t.y])]")
    es = b.table["xnli_es acc_norm"]
    assert picked == ["xnli_es acc_norm", [[[100, 200, 300], pytest.approx(list(es[:3]), abs=1e-6)],
                                           [[100, 200], pytest.approx(list(es[3:5]), abs=1e-6)]]]
    profile = d.execute_script("return document.querySelector('.lang-plot').data.map(t => [t.name, t.x])")
    assert profile == [["runA@step300", ["deu_Latn", "fra_Latn", "spa_Latn"]], ["runB@step300", ["deu_Latn", "fra_Latn", "spa_Latn"]]]
    assert [e for e in d.get_log("browser") if e["level"] == "SEVERE"] == []

    shot = tmp_path / "report.png"
    d.save_screenshot(str(shot))
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    colours = img.getcolors(img.width * img.height)
    white = sum(n for n, rgb in colours if rgb == (255, 255, 255))
    assert len(colours) > 20 and white < 0.95 * img.width * img.height  # not blank: text, colours, lines


@pytest.mark.fast
def test_bench_rows_sit_beside_the_mean_score_of_the_same_label(tmp_path: Path) -> None:
    rows = [EvalRow("/scratch/runC/checkpoint-5", t, 0, step=5) for t in ("t1", "t2")]
    d = tmp_path / "r"
    d.mkdir()
    for i, r in enumerate(rows):
        write_json(d / f"{i}.json", fake(r, "2025-01-01", acc=0.2 * (i + 1)))
    bench_row = EvalRow(rows[0].model, "bench_b8_i16_o16", 0, step=5, suite="bench")
    write_json(d / "bench.json", {
        "results": {bench_row.task: {"output_tokens_per_s,none": 123.0, "latency_s,none": 0.5}},
        "n-shot": {bench_row.task: 0},
        "bench": {"batch_size": 8, "input_tokens": 16, "output_tokens": 16, "backend": "hf"},
        "oellm": {"row": {"row_id": bench_row.row_id, "model": bench_row.model, "model_args": "", "step": 5,
                          "task": bench_row.task, "n_shot": 0, "limit": None, "suite": "bench"}}})
    out = tmp_path / "bench.html"
    cli.main(["collect-results", str(d), "--html", str(out), "--format", "none"])
    bench = embedded(out)["bench"]
    row = dict(zip(bench["head"], bench["rows"][0], strict=True))
    assert row["label"] == "runC@step5" and row["output_tokens_per_s"] == 123.0 and row["latency_s"] == 0.5
    assert row["mean_score"] == pytest.approx(0.4) and row["energy_per_token_j"] is None  # missing, never 0
    assert "–" in out.read_text().split('id="bench-table"')[1].split("</table>")[0]  # shown as missing


@pytest.mark.fast
def test_a_language_mean_is_over_its_complete_set_as_the_leaderboards_averages(tmp_path: Path) -> None:
    """REVIEW finding 3 (R3), plain lm-eval result files: model A has arc_de, hellaswag_de and arc_fr; model B
    lacks hellaswag_de. B's German is left blank (as its group average is), not its one task's 0.6."""
    d = tmp_path / "lm_eval_out"
    d.mkdir()
    scores = {"A": {"arc_de": 0.3, "hellaswag_de": 0.7, "arc_fr": 0.4}, "B": {"arc_de": 0.6, "arc_fr": 0.4}}
    for model, tasks in scores.items():
        write_json(d / f"results_{model}.json", {
            "results": {t: {"alias": t, "acc,none": v, "acc_stderr,none": 0.01} for t, v in tasks.items()},
            "n-shot": {t: 0 for t in tasks}, "config": {"model_args": f"pretrained=org/{model}"}, "date": 1.75e9})
    groups = tmp_path / "groups.yaml"
    groups.write_text("task_groups:\n  eu-mini:\n    n_shots: [0]\n    tasks:\n      - task: arc_de\n"
                      "      - task: hellaswag_de\n      - task: arc_fr\n")
    out = tmp_path / "r3.html"
    cli.main(["collect-results", str(d), "--task_groups_file", str(groups), "--html", str(out), "--format", "none"])
    [view] = embedded(out)["languages"]
    assert view["langs"] == ["deu_Latn", "fra_Latn"] and view["models"] == ["org/A", "org/B"]
    german, french = view["matrix"]
    assert german == [pytest.approx(0.5), None]  # A: (0.3 + 0.7) / 2; B: incomplete, blank
    assert french == [pytest.approx(0.4), pytest.approx(0.4)]
    heat = out.read_text().split('class="heat"')[1].split("</table>")[0]
    assert re.search(r"<td>deu_Latn</td>\s*<td[^>]*>0\.500</td>\s*<td[^>]*>–</td>", heat), heat
