"""report.html in a real browser (Debian's headless Chromium through selenium): it draws, it has one bar per
attempt, it marks the critical path and names the bottleneck, it logs no console error and requests nothing.

The synthetic launch run needs no Ray; the last test renders the report.html that a real mission on the scripted
engine writes into its run directory. Set CONTROLPLANE_REPORT_PNG=docs/img/report.png to keep the screenshot of
the launch run for the docs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from controlplane._core.report_html import render_report_html
from controlplane._core.timeline import build_timeline, deps_from_result, find_bottleneck
from tests.helpers import agent, by_id, run_mission, task
from tests.helpers.synthetic_run import launch_run

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1240,1000"]
PNG_ENV = "CONTROLPLANE_REPORT_PNG"
BROWSER_OWN_SCHEMES = ("data:", "chrome:", "chrome-untrusted:", "about:", "devtools:")  # no network behind them


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium is missing: `make setup` installs it as root, or run "
                    "`apt-get install -y chromium chromium-driver`")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def open_page(driver, path: Path) -> tuple[list[str], list[str]]:
    """Load a file; return every URL the browser requested beyond the file itself and its own internal pages
    (any page's, so background requests count too), and the page's console errors."""
    driver.get_log("performance"), driver.get_log("browser")  # drop what earlier pages left
    driver.get(path.as_uri())
    driver.execute_script("return document.readyState")
    requested = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if url != path.as_uri() and not url.startswith(BROWSER_OWN_SCHEMES):
                requested.append(url)
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return requested, errors


def test_the_checks_catch_a_request_and_a_console_error(browser, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><link rel="icon" href="data:,"><img src="http://127.0.0.1:9/x.png">'
                    "<script>notDefinedAnywhere()</script>")
    requested, errors = open_page(browser, page)
    assert requested == ["http://127.0.0.1:9/x.png"]
    assert any("notDefinedAnywhere" in e for e in errors)


def test_report_renders_offline_with_bars_critical_path_and_bottleneck(browser, tmp_path):
    from PIL import Image, ImageStat
    from selenium.webdriver.common.by import By

    run = launch_run()
    run.result["conflicts"] = [{"topic": "launch date", "policy": "priority", "winner": "copywriter",
                                "reason": "copywriter ranks above designer"}]
    timeline = build_timeline(run.events, deps_from_result(run.result))
    page = tmp_path / "report.html"
    page.write_text(render_report_html(run.result, run.events))

    requested, errors = open_page(browser, page)
    assert requested == [] and errors == []

    bars = browser.find_elements(By.CSS_SELECTOR, "#gantt .bar[data-attempt]")
    assert len(bars) == len(timeline.bars) == len(run.details)  # one bar per task attempt
    assert all(bar.rect["width"] > 0 for bar in bars)
    critical = {b.get_attribute("data-task") for b in browser.find_elements(By.CSS_SELECTOR, "#gantt .bar.critical")}
    assert critical == set(timeline.critical_path) and len(critical) >= 3
    headline = browser.find_element(By.ID, "bottleneck")
    assert find_bottleneck(timeline).sentence in headline.text and headline.get_attribute("data-name") == "copywriter"

    bars[0].click()
    assert "attempt 1 on" in browser.find_element(By.ID, "detail").text
    browser.find_element(By.ID, "only-critical").click()
    assert "only-critical" in browser.find_element(By.TAG_NAME, "body").get_attribute("class")
    browser.find_element(By.ID, "only-critical").click()

    png = tmp_path / "report.png"
    browser.save_screenshot(str(png))
    image = Image.open(png).convert("RGB")
    assert max(ImageStat.Stat(image).var) > 500  # not blank
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 50
    assert browser.get_log("browser") == []
    if os.environ.get(PNG_ENV):
        target = Path(os.environ[PNG_ENV])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, target)


def test_the_report_of_a_real_mission_marks_every_attempt_the_critical_path_and_the_bottleneck(browser, router,
                                                                                               tmp_path):
    from selenium.webdriver.common.by import By

    from controlplane.cli.report import write_run_dir

    fan = [task(f"research{i}", f"researcher{i % 2}") for i in range(3)]
    result = run_mission(router, {
        "agents": [agent("researcher0"), agent("researcher1"), agent("writer", model="scripted-slow"),
                   agent("lost", model="no-such-model"), agent("spare")],
        "tasks": [*fan, task("draft", "writer", deps=tuple(t["id"] for t in fan)),
                  task("polish", "writer", deps=("draft",)), task("edit", "writer", deps=("polish",)),
                  task("probe", "lost", fallback_agent="spare")]})
    assert result["status"] == "succeeded", result["reason"]
    assert by_id(result)["probe"]["attempts"] == 2  # `lost` asks for an unknown model (no retry), `spare` takes it
    events = result.pop("events")
    folder = write_run_dir(tmp_path, result, events)

    requested, errors = open_page(browser, folder / "report.html")
    assert requested == [] and errors == []
    attempts = [e for e in events if e.get("kind") == "task" and e["status"] == "running"]
    bars = browser.find_elements(By.CSS_SELECTOR, "#gantt .bar[data-attempt]")
    assert len(bars) == len(attempts) == 8  # one bar per task attempt
    assert all(bar.rect["width"] > 0 for bar in bars)
    timeline = build_timeline(events, deps_from_result(result))
    critical = {b.get_attribute("data-task") for b in browser.find_elements(By.CSS_SELECTOR, "#gantt .bar.critical")}
    assert critical == set(timeline.critical_path) and {"draft", "polish", "edit"} <= critical
    found = find_bottleneck(timeline)
    headline = browser.find_element(By.ID, "bottleneck")
    assert found.sentence in headline.text and headline.get_attribute("data-name") == "writer"
    assert browser.get_log("browser") == []
