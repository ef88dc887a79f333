"""``python -m emulator [--host H] [--port P] [--profile FILE]``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from emulator.server import serve


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="profile file (TOML or JSON) or a packaged name (default, chaos)")  # fmt: skip
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when stdin closes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    serve(args.host, args.port, args.profile, log_level=args.log_level,
          exit_with_parent=args.exit_with_parent)  # fmt: skip


if __name__ == "__main__":
    main()
