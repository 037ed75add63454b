"""collect-results --html at scale: the same 100,000 result files as benchmarks/collect_results.py, collected
by the CLI with and without `--html` (whole processes), the page's size, and the time until the page is
interactive in headless Chromium (its table rendered), then until its charts are drawn.

    python benchmarks/report_html.py [--files 100000] [--workdir DIR] [--source RESULT.json] [--repeat 2]

Targets: `--html` within 1.5x of the same collect without it; interactive in < 3 s. Needs chromium,
chromedriver and selenium (as tests/test_report.py). Prints the load average: other work on the machine
slows every wall time here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from collect_results import fan_out, real_result  # noqa: E402


def timed_cli(*args: str) -> float:
    """Wall seconds of one `oellm collect-results` process (start-up and imports included)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "oellm", "collect-results", *args, "--format", "none"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def browser_times(page: Path) -> tuple[float, int, float, int]:
    """(s until interactive, in-page ms since navigation, s from scrolling to the charts until drawn, ms from
    navigation until drawn: plotly.js runs when a chart section first shows, which may be before the scroll)."""
    from tests.test_report import open_page, start_browser, wait_for

    driver = start_browser()
    try:
        driver.get("data:text/html,<p>warm-up</p>")  # the browser's own first start is not the page's time
        interactive = open_page(driver, page, timeout_s=120)
        ready_ms = int(driver.execute_script("return document.body.dataset.readyMs"))
        driver.execute_script("document.getElementById('curves').scrollIntoView()")
        charts = wait_for(driver, "document.body.dataset.charts === '1'", timeout_s=120)
        charts_ms = int(driver.execute_script("return document.body.dataset.chartsMs"))
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"], "JavaScript error on the page"
        return interactive, ready_ms, charts, charts_ms
    finally:
        driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--source", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    work = a.workdir or Path(tempfile.mkdtemp(prefix="oellm-bench-report-"))
    files = work / "many"
    if not files.exists():
        source = a.source or real_result(work / "real")
        t = time.perf_counter()
        fan_out(source, files, a.files)
        print(f"generated {a.files} result files in {time.perf_counter() - t:.1f} s")
    page = work / "report.html"
    plain, html = [], []
    for _ in range(a.repeat):  # interleaved, best of each: load from other work hits both alike
        plain.append(timed_cli(str(files)))
        html.append(timed_cli(str(files), "--html", str(page)))
    p, h = min(plain), min(html)
    print(f"collect-results {files}: {p:.2f} s; with --html {h:.2f} s ({h / p:.2f}x, target <= 1.5x; best of "
          f"{a.repeat}: {', '.join(f'{x:.1f}' for x in plain)} / {', '.join(f'{x:.1f}' for x in html)}); "
          f"page {page.stat().st_size / 1e6:.1f} MB; load average {os.getloadavg()[0]:.1f}")
    interactive, ready_ms, charts, charts_ms = browser_times(page)
    print(f"headless Chromium: interactive after {interactive:.2f} s (page script done {ready_ms} ms after navigation "
          f"start; target < 3 s); charts drawn {charts_ms} ms after navigation ({charts:.2f} s after scrolling to them); "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
