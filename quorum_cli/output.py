"""Where the ``quorum`` command writes: messages on standard error, answers on standard output."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

#: Messages, warnings and errors (one line each, however narrow the pipe).
console = Console(stderr=True, soft_wrap=True)
#: Answers. Piped output keeps full tables (Rich would squeeze them to 80 columns).
out = Console(width=None if sys.stdout.isatty() else 200)


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on standard output (non-JSON values as strings)."""
    out.print_json(json.dumps(data, default=str))
