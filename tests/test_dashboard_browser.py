"""The dashboard in a real browser: headless Chromium with the network blocked opens the file, draws every plot,
logs no console error, runs no injected script, and its task/variant filters hide what they should.

Chromium and chromedriver come from the system packages (``.ci/run`` installs them); without them the test is
skipped. The report is the one test_report.py builds (shared when both files run in one session).
"""

from __future__ import annotations

import shutil
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

from test_report import EMPTY_VARIANT, built_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="needs chromium and chromedriver from the system packages (apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mk-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-extensions", "--window-size=1400,1000", f"--user-data-dir={profile}",
        # no network: every request goes to a dead proxy and every host name fails to resolve
        "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * ~NOTFOUND",
    ):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(120)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(predicate, timeout: float = 60.0, step: float = 0.25) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_dashboard_renders_offline_without_errors(driver, tmp_path_factory, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    report = built_report(tmp_path_factory.getbasetemp())
    page = report / "dashboard.html"
    driver.get(page.resolve().as_uri())
    n_divs = len(driver.find_elements(By.CSS_SELECTOR, ".plotly-graph-div"))
    assert n_divs >= 20
    # every plot container is drawn: plotly adds its SVG layer to each
    assert _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, ".plotly .main-svg")) >= n_divs)
    drawn = driver.execute_script(
        "return Array.from(document.querySelectorAll('.plotly-graph-div'))"
        ".filter(d => d.querySelector('.main-svg') && d.getBoundingClientRect().height > 100).length"
    )
    assert drawn == n_divs
    with pytest.raises(NoAlertPresentException):  # the injected <script>/<img onerror> never ran
        driver.switch_to.alert.text  # noqa: B018
    assert driver.execute_script("return document.querySelectorAll('img[onerror], script[src]').length") == 0
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe

    shot = tmp_path / "dashboard.png"
    assert driver.save_screenshot(str(shot))
    with Image.open(shot) as im:
        px = np.asarray(im.convert("RGB"), dtype=float)
    assert px.std() > 20 and len(np.unique(px.reshape(-1, 3), axis=0)) > 50, "the screenshot is blank"


def test_filters_hide_variants_and_tasks(driver, tmp_path_factory):
    from selenium.webdriver.common.by import By

    report = built_report(tmp_path_factory.getbasetemp())
    driver.get((report / "dashboard.html").resolve().as_uri())
    assert _wait(
        lambda: driver.execute_script(
            "return !!window.Plotly && document.querySelectorAll('.main-svg').length > 0"
        )
    )
    rows = driver.find_elements(By.CSS_SELECTOR, f'tr[data-variant="{EMPTY_VARIANT}"]')
    assert rows and all(r.is_displayed() for r in rows)
    driver.find_element(By.CSS_SELECTOR, f'input[data-filter="variant"][value="{EMPTY_VARIANT}"]').click()
    assert _wait(lambda: not any(r.is_displayed() for r in rows))
    # the variant's traces are hidden in the plots; other variants stay visible
    visible = driver.execute_script(
        "var out = {}; document.querySelectorAll('.plotly-graph-div').forEach(function (d) {"
        "  (d.data || []).forEach(function (t) { if (t.legendgroup) {"
        "    out[t.legendgroup] = (out[t.legendgroup] || []).concat([t.visible !== false]); } }); });"
        "return out;"
    )
    assert not any(visible.get(EMPTY_VARIANT, [])) and all(visible["mlp_transformer"])
    # a task filter hides that task's figure blocks
    task = "symbolic/exp_sin"
    blocks = driver.find_elements(By.CSS_SELECTOR, f'figure[data-task="{task}"]')
    assert blocks and all(b.is_displayed() for b in blocks)
    driver.find_element(By.CSS_SELECTOR, f'input[data-filter="task"][value="{task}"]').click()
    assert _wait(lambda: not any(b.is_displayed() for b in blocks))
    driver.find_element(By.CSS_SELECTOR, 'button[data-select="task"][data-state="all"]').click()
    assert _wait(lambda: all(b.is_displayed() for b in blocks))
