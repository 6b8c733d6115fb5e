"""The tutorial's last step in a real browser (Debian's Chromium, driven by Playwright, never downloaded): open the
console's URL, create a job on this machine and watch it finish, open its evaluation, filter the record browser by a
confusion cell, compare it with a second run and see the flipped records, run the gate.

Screenshots are saved and checked to be drawn (a chart has many colours, a thumbnail decodes and is not blank).
With ``SWCLI_SCREENSHOTS=DIR`` they are also written there: ``make screenshots`` refreshes docs/images/ for the README.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.console_server import HOSTILE_LABEL, console_world, running_console
from tests.helpers.run_folders import RUN, write_run

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture()
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _colours(png: bytes, box: dict | None = None) -> int:
    """Distinct colours in a screenshot (or in ``box`` of it): a blank area has one or two."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    if box:
        image = image.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"])))
    return len(image.getcolors(maxcolors=1 << 20) or [])


def _save(png: bytes, name: str, tmp_path: Path) -> None:
    (tmp_path / name).write_bytes(png)
    out = os.environ.get("SWCLI_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, Path(out) / name)


def _thumbs_decoded(page, selector: str) -> int:
    return page.eval_on_selector_all(selector, "imgs => imgs.filter(i => i.complete && i.naturalWidth >= 32).length")


def test_the_tutorials_last_step(cli, tmp_path, browser):
    world = console_world(cli, tmp_path, label_names=["cat", "dog", "bird"])
    res = cli("model", "eval", world["model2"], "--dataset", "tiny")  # the run to compare with, from the terminal
    assert res.code == 0, res.err
    with running_console() as console:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        problems = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))

        # open the console's URL: the token becomes a cookie and leaves the address bar
        page.goto(console.url)
        assert "token=" not in page.url and page.title().startswith("Overview")

        # create one job on this machine and watch it finish
        page.click("text=Create a job")
        page.select_option("select[name=model-pick]", f"{world['model0'].split(':')[0]}:{_version(cli, world['model0'])}")
        page.select_option("select[name=dataset-pick]", index=1)
        page.click("#submit-job")
        page.wait_for_url("**/jobs/*")
        page.wait_for_selector("body[data-job-status=succeeded]", timeout=120_000)
        assert "300 / 300 records" in page.inner_text("#job-numbers")
        page.click("#job-run")

        # its evaluation: charts drawn
        page.wait_for_selector("#record-grid figure")
        assert "2 bird" in page.inner_text("#per-label")
        cm = page.locator(".cm:not([hidden]) svg")
        assert cm.count() == 1 and page.locator("#roc svg polyline").count() >= 3

        # filter the record browser by a confusion cell: true 0, predicted 1
        page.locator('.cm:not([hidden]) [data-true="0"][data-pred="1"]').first.click()
        _until(page, "() => document.querySelector('#records-status').textContent.includes('20 records')")
        captions = page.locator("#record-grid figcaption").all_inner_texts()
        assert len(captions) == 20 and all("true 0 cat" in c and "pred 1 dog" in c for c in captions)
        _until(page, "() => Array.from(document.querySelectorAll('#record-grid img')).every(i => i.complete)")
        assert _thumbs_decoded(page, "#record-grid img") == 20
        shot = page.screenshot(full_page=True)
        _save(shot, "console-evaluation.png", tmp_path)
        assert _colours(page.locator(".cm:not([hidden])").screenshot()) > 20
        assert _colours(page.locator("#roc").screenshot()) > 20
        assert _colours(page.locator("#record-grid figure img").first.screenshot()) >= 3

        # compare it with the second run: deltas and the records that flipped
        page.click("text=Evaluations")
        page.locator("input.pick").nth(0).check()
        page.locator("input.pick").nth(1).check()
        page.click("#compare-selected")
        page.wait_for_selector(".flip-grid figure")
        assert page.locator("#compare-metrics tr.differs").count() >= 1
        status = page.inner_text(".flip-status")
        assert "records right in the baseline, wrong here" in status
        _until(page, "() => Array.from(document.querySelectorAll('.flip-grid img')).every(i => i.complete)")
        assert _thumbs_decoded(page, ".flip-grid img") >= 20
        page.check("#differences-only")
        assert page.locator("#compare-metrics tr.same:visible").count() == 0
        _save(page.screenshot(full_page=True, clip={"x": 0, "y": 0, "width": 1400, "height": 1700}),
              "console-compare.png", tmp_path)

        # run the gate: the second run as candidate against the job's run, which it falls far below
        page.click("text=Gate")
        runs = page.locator("select[name=candidate] option").all_inner_texts()
        assert len(runs) == 2
        page.fill("input[name=min]", "accuracy=0.5")
        page.fill("input[name=max_drop]", "accuracy=0.01")
        page.select_option("select[name=candidate]", index=_index_of(runs, "acc 0.2"))
        page.select_option("select[name=baseline-pick]", index=_index_of(runs, "acc 0.6"))
        page.click("#run-gate")
        page.wait_for_selector("#gate-verdict:has-text('FAIL')")
        assert "accuracy" in page.inner_text("#gate-failure")
        assert "| accuracy |" in page.inner_text("#gate-markdown")
        _save(page.screenshot(full_page=True), "console-gate.png", tmp_path)
        assert problems == [], problems


def test_run_text_stays_text_in_the_browser(swcli_home, browser):
    """Label names and a model name written as markup are shown as typed: nothing runs, no dialog opens."""
    names = {"0": HOSTILE_LABEL, "1": "<script>alert(2)</script>", "2": "bird"}
    run = {**RUN, "model": {"name": "<img src=x onerror=alert(3)>", "version": "v1"},
           "dataset": {**RUN["dataset"], "label_names": names}}
    write_run(swcli_home / "runs" / "20260101-000000-x-y-0001", run=run)
    with running_console() as console:
        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(console.url)
        for path in ("/runs", "/runs/20260101-000000-x-y-0001", "/gate",
                     "/compare?runs=20260101-000000-x-y-0001&runs=20260101-000000-x-y-0001"):
            page.goto(console.base + path)
            page.wait_for_load_state("networkidle")
        page.goto(console.base + "/runs/20260101-000000-x-y-0001")
        page.wait_for_selector("#record-grid figure")
        assert HOSTILE_LABEL in page.inner_text("#per-label")
        assert "<img src=x onerror=alert(3)>" in page.inner_text(".lead")
        assert page.locator("img[src=x]").count() == 0 and dialogs == []


def _until(page, predicate: str, timeout: float = 30) -> None:
    """Poll ``predicate`` with ``page.evaluate`` (a function call, which the console's CSP allows: Playwright's own
    ``wait_for_function`` compiles its predicate from a string, which ``script-src 'self'`` refuses)."""
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(predicate):
        assert time.monotonic() < deadline, f"not true after {timeout} s: {predicate}"
        time.sleep(0.1)


def _version(cli, ref: str) -> str:
    """The full version of a model ref (the form's options carry full versions)."""
    import json

    res = cli("model", "info", ref, "-o", "json")
    assert res.code == 0, res.err
    return json.loads(res.out)["version"]


def _index_of(options: list[str], text: str) -> int:
    found = [i for i, o in enumerate(options) if text in o]
    assert found, (text, options)
    return found[0]
