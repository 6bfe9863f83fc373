"""One progress style for every long command: a tqdm bar on stderr (stdout stays for results and --json)."""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, unit: str = "img", enabled=True):
    """A tqdm bar counting to `total`; a disabled one (still safe to update and close) when `enabled` is false.

    `enabled` may be a text stream to draw on instead of stderr (an app drawing an indexer's bar for it)."""
    from tqdm import tqdm  # lazily: importing shoplens stays quick for commands that never draw one

    stream = enabled if hasattr(enabled, "write") else sys.stderr
    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, file=stream, mininterval=0.5)
