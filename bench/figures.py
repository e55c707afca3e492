"""What every bench prints about its machine, and how it prints a figure measured in runs.

A bench runs each measured phase ``--runs`` times and prints each figure as its median
and range, ``4,650 replies/s (4,410–4,720)``; a target is judged by the median and the
number of runs that met it is said, since one good run on a shared machine proves little.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

RUNS = 3
"""Runs of each measured phase unless ``--runs`` says otherwise."""


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo ("model name"), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load() -> str:
    """The load average over 1, 5 and 15 minutes."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def interpreter() -> str:
    """Python's version, and whether libpython is a shared library in this process.

    The same code ran the grading bench 12-15 % slower on a Python whose executable calls
    into ``libpython3.x.so`` (pyenv's default ``--enable-shared`` build) than on Debian's
    (libpython linked into the executable), so figures of different builds differ.
    """
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8")
    except OSError:
        return f"Python {platform.python_version()}"
    shared = "libpython" in maps
    linked = "a shared libpython" if shared else "libpython linked in"
    return f"Python {platform.python_version()} from {sys.base_prefix}, {linked}"


def machine_line() -> str:
    """One line for the head of a bench's output: CPU model, cores, interpreter, load average.

    Figures from a machine whose load average is well above zero are not comparable with
    those from a quiet one (the README's are from a load under 1.3 on 2 cores).
    """
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {interpreter()}; "
        f"load average {load()} at start"
    )


def load_line() -> str:
    """One line for the end of a bench's output: the load average then."""
    return f"load average {load()} at the end"


def add_runs(parser: argparse.ArgumentParser, quick: int | None = None) -> None:
    """Add ``--runs N`` (default :data:`RUNS`, or ``quick`` with ``--quick``)."""
    also = f"; {quick} with --quick" if quick is not None else ""
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help=f"times each measured phase runs; figures are the median and range "
        f"(default {RUNS}{also})",
    )


def runs_of(args: argparse.Namespace, quick: int | None = None) -> int:
    """How many runs ``args`` asks for (see :func:`add_runs`), at least one."""
    if args.runs is not None:
        return max(1, args.runs)
    if quick is not None and getattr(args, "quick", False):
        return quick
    return RUNS


def figure(values: Sequence[float], unit: str = "", digits: int = 1) -> str:
    """``median unit (min–max)`` of a figure measured once per run (just the value for one).

    Thousands are separated by commas; ``unit`` follows the median (``ms``, ``/s``, ``%``).
    """
    if not values:
        return "n/a"
    space = "" if unit in ("", "%", "x", "/s") or unit.startswith("/") else " "
    median = f"{statistics.median(values):,.{digits}f}{space}{unit}"
    if len(values) == 1:
        return median
    return f"{median} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def verdict(values: Sequence[float], ok: Callable[[float], bool]) -> str:
    """Whether a target is met by the median of ``values``, and in how many runs.

    ``met (3 of 3 runs)``, or ``NOT met (1 of 3 runs)``.
    """
    if not values:
        return "NOT met (no run measured it)"
    met = sum(1 for value in values if ok(value))
    word = "met" if ok(statistics.median(values)) else "NOT met"
    return f"{word} ({met} of {len(values)} run{'s' if len(values) != 1 else ''})"
