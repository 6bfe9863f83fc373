"""Write one benchmark's results as a section of docs/benchmarks.md (or docs/quality.md), leaving the other
sections alone."""

from __future__ import annotations

import fcntl
import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

from shoplens.atomic import atomic_write_text

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEach section is written by the script it names (`python -m benchmarks.NAME`); rerun it to refresh.\n"


def machine() -> str:
    """A line naming the machine: CPU model, cores, memory, Python."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except OSError:
        mem = 0.0
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def replace_block(path: Path, tag: str, block: str, header: str = HEADER) -> None:
    """Replace the text from `<!-- TAG -->` to `<!-- /TAG -->` in `path` with `block` (which carries the
    markers), or append it; a new file starts with `header`. Under a lock, and written atomically: two
    benchmarks writing the same document (docs/quality.md has both kinds of block) keep each other's blocks."""
    pattern = re.compile(rf"<!-- {re.escape(tag)} -->.*?<!-- /{re.escape(tag)} -->\n", re.S)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else header
        text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
        atomic_write_text(path, text)


def write_section(name: str, body: str, path: Path = DOC, command: str | None = None) -> None:
    """Replace (or append) the section `name`, stamped with the machine, the date and the command (by default
    `python -m benchmarks.NAME`)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = command or f"python -m benchmarks.{name}"
    section = (f"<!-- bench:{name} -->\n## {name}\n\n_Machine: {machine()}; run {stamp}; "
               f"command `{command}`._\n\n{body.strip()}\n<!-- /bench:{name} -->\n")
    replace_block(path, f"bench:{name}", section)
