"""Where downloaded and derived model files live (never the working directory)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$SHOPLENS_CACHE`, else `$XDG_CACHE_HOME/shoplens`, else `~/.cache/shoplens`; created on demand."""
    base = os.environ.get("SHOPLENS_CACHE")
    if base:
        root = Path(base)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shoplens"
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
