"""The report opened in headless Chromium: it renders (a screenshot that is not blank), every plot
is in the page and decoded, and nothing tried to load from the network."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from magv.report.html import write_report
from magv.store import Store
from tests.report_fixtures import build_report_store

pytestmark = [pytest.mark.browser, pytest.mark.integration]

QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]  # fmt: skip


def _chromium() -> str:
    found = shutil.which("chromium") or (Path("/usr/bin/chromium").is_file() and "/usr/bin/chromium")
    if not found:
        pytest.fail("chromium is not installed: `apt-get install -y chromium` (CI installs it)")
    return found


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)


def test_report_renders_in_headless_chromium(tmp_path):
    browser = _chromium()
    build_report_store(tmp_path / "magv.duckdb")
    with Store(tmp_path / "magv.duckdb", read_only=True) as store:
        files = write_report(store, tmp_path / "report")
    url = files.html.resolve().as_uri()
    expected = len(files.data.metrics["figures"])
    assert expected == 16

    shot = tmp_path / "shot.png"
    done = _run([browser, *QUIET, f"--user-data-dir={tmp_path / 'profile-1'}", f"--screenshot={shot}",
                 "--window-size=1280,4000", url])  # fmt: skip
    assert shot.is_file(), f"no screenshot; chromium said: {done.stderr[-2000:]}"
    pixels = image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (4000, 1280)
    # not blank: below the dark title bar, text and plots cover a good part of the page in many colours
    body = pixels[200:]
    background = body[-5:, 5].mean(axis=0)
    ink = np.abs(body - background).sum(axis=2) > 0.1
    assert ink.mean() > 0.05, f"only {ink.mean():.1%} of the page below the title has content"
    colours = np.unique((body * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200, f"only {len(colours)} colours: the plots did not render"

    done = _run([browser, *QUIET, f"--user-data-dir={tmp_path / 'profile-2'}", "--virtual-time-budget=10000",
                 "--enable-logging=stderr", "--v=0", "--dump-dom", url])  # fmt: skip
    dom = done.stdout
    assert "</html>" in dom, f"no DOM dumped; chromium said: {done.stderr[-2000:]}"
    images = re.findall(
        r'<figure[^>]*data-state="(\w+)"[^>]*><img src="(data:image/svg\+xml;base64,[^"]{100,})"', dom
    )
    assert len(images) == expected, f"{len(images)} of {expected} figures in the rendered page"
    assert {state for state, _ in images} == {"ok"}, "a figure failed to decode"
    # the data itself is in the page: the first samples are open, with their conversation
    first = files.data.metrics["samples"]["items"][0]
    samples = dom.split('<section id="samples">')[1].split("</section>")[0]
    assert re.search(r'<details class="case sample"[^>]*\bopen\b', samples)
    assert 'class="turn customer"' in samples and 'class="turn answer"' in samples
    assert first["question_id"] in samples
    assert len(re.findall(r"<img ", dom)) == expected
    # headless Chromium does not log failed loads reliably; nothing in the page may point outside it
    assert not re.search(r'(src|href)="(https?:)?//', dom) and "<link" not in dom
    assert not re.search(r"Failed to load resource|net::ERR_", done.stderr), done.stderr[-2000:]
