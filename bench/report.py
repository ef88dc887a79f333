"""Report plumbing: a section per benchmark, the machine header, Markdown and JSON output."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.proc import machine_busy

OUT_DIR = Path(__file__).resolve().parent / "out"
#: Above this share of the machine's CPU used by other processes, a run is flagged as noisy.
NOISY_SHARE = 0.10


@dataclass
class Section:
    """One benchmark's outcome: Markdown for people, data for the JSON report."""

    name: str
    title: str
    markdown: str
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    foreign_cpu: float = math.nan  # share of the machine's CPU used by processes not ours
    #: A line the report prints at its top, under the machine header (e.g. a comparison not run).
    notice: str = ""

    def render(self) -> str:
        """The section as Markdown, with its heading, run time and the CPU others used meanwhile."""
        foot = (
            f"_(ran in {self.seconds:.1f} s; processes outside this benchmark used "
            f"{100 * self.foreign_cpu:.0f} % of the machine's CPU meanwhile)_"
        )
        if self.foreign_cpu > NOISY_SHARE:
            foot += "\n\n**Other processes were competing for the CPU during this run: treat it as noisy.**"
        return f"## {self.title}\n\n{self.markdown.strip()}\n\n{foot}\n"


def _busy_cpu() -> tuple[float, float]:
    """``(machine busy CPU s, this process and its reaped children CPU s)`` so far."""
    t = os.times()
    return machine_busy(), t.user + t.system + t.children_user + t.children_system


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, Python and OS of this machine."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = math.nan
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
    }


def header(full: bool) -> str:
    """The report's title and machine description."""
    m = machine()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "# Quorum benchmarks\n\n"
        f"{when}, {'full' if full else 'small'} size. Machine: {m['cores']} cores, {m['cpu']}, "
        f"{m['memory_gb']} GB RAM, {m['implementation']} {m['python']}, {m['os']}.\n"
        "All providers are the bundled emulator on loopback: the figures measure Quorum "
        "(Celery, Redis, the SDKs, the merge), not real models or real networks.\n"
    )


def notices(sections: list[Section]) -> str:
    """The sections' notices as a block for the top of the report (empty when there are none)."""
    lines = [f"> **{s.notice}**" for s in sections if s.notice]
    return "\n>\n".join(lines) + "\n" if lines else ""


def _clean(value: Any) -> Any:
    """JSON-safe data: NaN becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(sections: list[Section], full: bool, path: Path) -> None:
    """Write every section's data, plus the machine description, as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": machine(),
        "size": "full" if full else "small",
        "generated_at": datetime.now(UTC).isoformat(),
        "benchmarks": {
            s.name: {"title": s.title, "seconds": s.seconds, "foreign_cpu_share": s.foreign_cpu, **s.data}
            for s in sections
        },
    }
    path.write_text(json.dumps(_clean(doc), indent=2, default=str))


def timed_run(run: Callable[[bool], Section], full: bool) -> Section:
    """Run one benchmark and record how long it took."""
    start, (busy0, own0) = time.monotonic(), _busy_cpu()
    section = run(full)
    section.seconds = time.monotonic() - start
    busy1, own1 = _busy_cpu()  # every child has been reaped by now: its CPU counts as ours
    cores = os.cpu_count() or 1
    section.foreign_cpu = max(0.0, (busy1 - busy0) - (own1 - own0)) / (section.seconds * cores)
    return section


def cli(run: Callable[[bool], Section], argv: list[str] | None = None) -> None:
    """``python -m bench.X [--full] [--json PATH]``: run one benchmark and print its section."""
    parser = argparse.ArgumentParser(description=sys.modules[run.__module__].__doc__)
    parser.add_argument("--full", action="store_true", help="the larger run (default: small)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    section = timed_run(run, args.full)
    print(header(args.full))
    print(notices([section]))
    print(section.render())
    if args.json:
        write_json([section], args.full, args.json)
