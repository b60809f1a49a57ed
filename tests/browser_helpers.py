"""A real headless Chromium for browser tests (``pytest.mark.browser``).

Uses Debian's ``chromium`` (browsers cannot be downloaded here); ``.ci/run`` installs it, so
CI always runs these tests. Elsewhere they are skipped when no Chromium is installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A launched Playwright ``Browser``, closed after; skips the test without Chromium."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        pytest.skip("no Chromium: install Debian's chromium (see .ci/run)")
    async_api = pytest.importorskip("playwright.async_api")
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=path, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()
