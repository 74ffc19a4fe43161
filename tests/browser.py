"""A page as a person sees it, in headless Chromium, without extra Python packages: browser_check.js is
injected into a copy of the page, writes its measurements into the DOM once the page has loaded, and
Chromium's --dump-dom prints them. The set-up installs Chromium (launch/install_chromium.sh); without
it these tests skip, except in CI (CI=true), where a missing browser fails the run."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

_NAMES = ("chromium", "chromium-browser", "google-chrome")
# No network, no first-run or sync work: the page is a local file and everything it shows is embedded.
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--virtual-time-budget=10000"]  # lets the load event (and the check) run before the dump


def chromium() -> str:
    """The browser's path; skips the test without one, or fails it in CI, whose set-up installs it."""
    found = next((p for p in map(shutil.which, _NAMES) if p), None)
    if found:
        return found
    why = "headless Chromium not found (Debian: apt-get install chromium; `make test` installs it as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {why}", pytrace=False)
    pytest.skip(why)


def _chromium(args: list[str], profile: Path) -> str:
    done = subprocess.run([chromium(), *_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def inspect(page: Path, work: Path, width: int = 1280, height: int = 2000) -> dict:
    """browser_check.js's measurements of `page` in a width × height window (scrollbar shown)."""
    work.mkdir(parents=True, exist_ok=True)
    check = (Path(__file__).parent / "browser_check.js").read_text()
    copy = work / f"checked-{page.name}"
    copy.write_text(page.read_text().replace("</body>", f"<script>{check}</script></body>", 1))
    dom = _chromium([f"--window-size={width},{height}", "--dump-dom", copy.as_uri()], work / "profile")
    found = re.findall(r'<pre id="browser-check">(.*?)</pre>', dom, re.S)
    assert found, f"the check script did not run in {copy}"
    return json.loads(html.unescape(found[-1]))


def screenshot(page: Path, png: Path, width: int, height: int) -> Path:
    """A PNG of the whole page (height: its scroll height, from `inspect`)."""
    _chromium([f"--window-size={width},{height}", "--hide-scrollbars", f"--screenshot={png}", page.as_uri()],
              png.parent / "profile")
    assert png.stat().st_size > 0
    return png
