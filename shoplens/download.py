"""Fetch the Kaggle fashion-images catalog with opendatasets (needs internet and Kaggle credentials)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from shoplens.errors import UserError

KAGGLE_URL = "https://www.kaggle.com/datasets/vikashrajluhaniwal/fashion-images"
KAGGLE_HOST = "www.kaggle.com"


class DownloadError(UserError, RuntimeError):
    """The download cannot happen; the message says why and what to do."""


def check_reachable(host: str = KAGGLE_HOST, port: int = 443, timeout: float = 5.0) -> None:
    """Fail within `timeout` seconds, with a clear message, when `host` cannot be reached."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise DownloadError(f"cannot reach {host} ({exc}); --download needs internet access. "
                            f"Download {KAGGLE_URL} elsewhere and copy the folder here instead.") from None


def has_kaggle_credentials() -> bool:
    """opendatasets would prompt on the terminal without these; we refuse instead."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return (config_dir / "kaggle.json").exists() or Path("kaggle.json").exists()


def download_fashion_images(target: str | Path, timeout: float = 5.0) -> Path:
    """Download the set into `target` (its Kaggle layout: target/data/fashion.csv ...); no-op if present."""
    target = Path(target)
    if (target / "data" / "fashion.csv").exists():
        return target
    check_reachable(timeout=timeout)
    if not has_kaggle_credentials():
        raise DownloadError("Kaggle credentials not found: set KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json in "
                            "~/.kaggle/ (Kaggle > Account > Create New API Token)")
    try:
        import opendatasets
    except ImportError as exc:
        raise DownloadError(f"--download needs the opendatasets package (pip install -r requirements.txt): {exc}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    opendatasets.download(KAGGLE_URL, data_dir=str(target.parent))
    fetched = target.parent / "fashion-images"
    if fetched.resolve() != target.resolve():
        shutil.move(str(fetched), str(target))
    if not (target / "data" / "fashion.csv").exists():
        raise DownloadError(f"the download finished but {target}/data/fashion.csv is missing")
    return target
