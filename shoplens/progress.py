"""One progress style for every long command: a tqdm bar on stderr (stdout stays for results and --json)."""

from __future__ import annotations

import sys
from typing import TextIO

# `progress` arguments across shoplens: False (quiet), True (stderr), or a text stream: an app running a sync
# handed to it by an indexer draws that indexer's bars and notes on the indexer's own terminal.


def stream_of(progress) -> TextIO:
    """The stream a command's bars and notes go to: the given stream, else stderr."""
    return progress if hasattr(progress, "write") else sys.stderr


def note(progress, text: str) -> None:
    """A line beside the bars (on the same stream), unless quiet."""
    if progress:
        print(text, file=stream_of(progress), flush=True)


def progress_bar(total: int, desc: str, unit: str = "img", enabled=True):
    """A tqdm bar counting to `total`; a disabled one (still safe to update and close) when `enabled` is false.

    `enabled` may be a text stream to draw on instead of stderr (an app drawing an indexer's bar for it)."""
    from tqdm import tqdm  # lazily: importing shoplens stays quick for commands that never draw one

    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, file=stream_of(enabled), mininterval=0.5)
