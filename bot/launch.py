"""The ``trainer`` command's entry point: Ctrl-C while the program loads stops it cleanly."""

from __future__ import annotations

import sys

STOPPED = "已停止 / Stopped (Ctrl-C)."


def main() -> None:
    """Load the command line and run it; Ctrl-C that no command held back ends it in one line."""
    try:
        from bot.cli import main as run

        run()
    except KeyboardInterrupt:
        print(f"\n{STOPPED}", file=sys.stderr)
        sys.exit(130)
