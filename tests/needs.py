"""What a test needs from the machine (the shared datasets, Chromium, a Milvus server): skipped where it is
missing, a failure where CI says it must be there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest


def absent(reason: str, require: str) -> NoReturn:
    """Skip the test for something this machine lacks, or fail it with the same reason where the environment
    variable `require` is set: scripts/test.sh (CI) sets SHOPLENS_REQUIRE_DATASETS, SHOPLENS_REQUIRE_BROWSER and
    SHOPLENS_REQUIRE_MILVUS, so a run that silently skipped what it could not find cannot pass there."""
    if os.environ.get(require):
        pytest.fail(f"{reason} ({require} is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def browser(chromium: Path) -> Path:
    """`chromium` when it is there and Playwright can drive it; else absent() under SHOPLENS_REQUIRE_BROWSER."""
    if not chromium.exists():
        absent(f"needs Debian's Chromium at {chromium} (apt-get install -y chromium)", "SHOPLENS_REQUIRE_BROWSER")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        absent(f"needs Playwright (pip install -r requirements-dev.txt): {exc}", "SHOPLENS_REQUIRE_BROWSER")
    return chromium
