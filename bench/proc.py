"""Memory of a process tree from /proc (no psutil): RSS and PSS summed over a pid and its descendants."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PROC = Path("/proc")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the parenthesised name
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _kb(path: Path, key: str) -> int:
    """A ``key:  N kB`` line of a /proc file, in kB (0 when unreadable)."""
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def tree_memory(pid: int) -> tuple[int, int, int]:
    """``(rss_bytes, pss_bytes, processes)`` of ``pid`` and its descendants.

    RSS counts pages shared between a prefork parent and its children once per process; PSS
    splits them, so it is the fairer total for a process tree.
    """
    pids = descendants(pid)
    rss, pss = memory_of(pids)
    return rss, pss, len(pids)


def memory_of(pids: list[int]) -> tuple[int, int]:
    """``(rss_bytes, pss_bytes)`` summed over ``pids`` (a process that is gone counts 0)."""
    rss = sum(_kb(PROC / str(p) / "status", "VmRSS:") for p in pids)
    pss = sum(_kb(PROC / str(p) / "smaps_rollup", "Pss:") for p in pids)
    return rss * 1024, pss * 1024


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants."""
    ticks = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (PROC / str(p) / "stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores, from /proc/stat)."""
    fields = [int(x) for x in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
