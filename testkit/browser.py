"""Debian's chromium for the browser tests, driven by Playwright (never Playwright's own download)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--headless",
    # The iframe test embeds the loopback app in a page routed as https://huggingface.co; on Spaces the app is a
    # public https origin, here it is loopback, which Chromium's local-network checks would block.
    "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessChecks,BlockInsecurePrivateNetworkRequests",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "space"


def ensure_chromium() -> str:
    """Debian's chromium (installed with apt when missing); never Playwright's own download."""
    if not Path(CHROMIUM).exists() and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True)
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: install Debian's chromium package"
    return CHROMIUM


def query(page: Page) -> dict[str, str]:
    """The page's query parameters, one value each."""
    return {key: values[0] for key, values in parse_qs(urlparse(page.url).query).items()}
