"""``report.html`` in a real browser: headless Chromium, driven by Selenium through Debian's chromedriver,
opens the report of a small real sweep with every host name unresolvable (so anything not in the sweep
directory fails to load) and finds every picture loaded and no error in the console.

Skipped where Chromium, chromedriver or Selenium is missing: ``apt-get install chromium chromium-driver``
(``.ci/run`` does) and ``pip install -e '.[dev]'``.
"""

from __future__ import annotations

import csv
import json
import shutil
import struct
import time
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig

from tests.helpers import bowl, sweep_in_process

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")
SECTIONS = ["Best trials", "Search", "Best trial", "Optimizer comparison", "All trials"]
IMAGES = "return Array.from(document.images, i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight])"


def with_curves(cfg) -> float:
    """A trial that writes what a training run writes: results.json and the csv logger's metrics.csv."""
    value = bowl(cfg)
    out = Path(HydraConfig.get().runtime.output_dir)
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "epoch", "train/loss", "val/loss", "val/acc", "train/lr"])
        for epoch in range(1, 6):
            writer.writerow([10 * epoch, epoch, 1 / epoch, 1.2 / epoch - value / 10, value + epoch / 100,
                             cfg.optimizer.lr / epoch])
    (out / "results.json").write_text(json.dumps({
        "objective": "val/acc", "value": value, "direction": "maximize", "status": "completed",
        "global_step": 50, "epochs": 5}))
    return value


@pytest.fixture
def chromium():
    """A headless Chromium that resolves no host name and keeps the console log."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"Chromium is not installed ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium "
                    "chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="Selenium is not installed: pip install selenium")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the driver path given: Selenium never runs Selenium Manager, so never tries to download a driver
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    return struct.unpack(">II", path.read_bytes()[16:24])


def errors(log: list[dict]) -> list[str]:
    return [entry["message"] for entry in log if entry["level"] == "SEVERE"]


def test_report_opens_offline_in_chromium_with_every_picture_and_no_console_error(tmp_path, chromium):
    sweep_in_process(tmp_path, with_curves, "hydra/sweeper/sampler=grid", "optimizer=choice(sgd,adam)",
                     "schedule=choice(constant,cosine)", "logger=csv")
    page = tmp_path / "report.html"
    written = {p.name: p for p in tmp_path.glob("*.png")}
    assert {"history.png", "best_trial.png", "comparison.png", "comparison_curves.png"} <= set(written)

    chromium.get(page.as_uri())  # returns after the load event: every <img> has loaded or failed by then
    assert chromium.execute_script("return document.readyState") == "complete"
    assert chromium.execute_script("return document.compatMode") == "CSS1Compat"  # <!DOCTYPE html>, no quirks
    images = chromium.execute_script(IMAGES)
    assert {src for src, *_ in images} == set(written)
    for src, complete, width, height in images:
        assert complete and width > 0, f"{src} did not load"
        assert (width, height) == png_size(written[src]), src
    console = chromium.get_log("browser")
    assert not errors(console), console

    # the page is the template's: its CSS applies, its sections are there, all trials behind <details>
    assert chromium.execute_script(
        "return getComputedStyle(document.querySelector('table')).borderCollapse") == "collapse"
    assert [h.text for h in chromium.find_elements("css selector", "h2")] == SECTIONS
    assert len(chromium.find_elements("css selector", "details table tr")) == 1 + 4
    assert chromium.find_element("css selector", "tr.best td").text.isdigit()
    links = [a.get_attribute("href") for a in chromium.find_elements("css selector", "a")]
    assert links and all(href.startswith(tmp_path.as_uri() + "/") for href in links), links

    # the probe itself sees a picture that fails: a missing file is a console error and naturalWidth 0
    chromium.execute_script("const i = new Image(); i.src = 'missing.png'; document.body.append(i);")
    deadline = time.monotonic() + 10
    while not chromium.execute_script("return document.images[document.images.length - 1].complete"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert chromium.execute_script(IMAGES)[-1] == ["missing.png", True, 0, 0]
    assert any("missing.png" in e for e in errors(chromium.get_log("browser")))
