"""dev.py, the fresh clone's entry point: the bench command's list and its errors."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_bench_script_is_run_by_dev_bench() -> None:
    listed = {name for name, _ in load_dev().BENCHES}
    scripts = {path.stem.removeprefix("bench_") for path in (ROOT / "bench").glob("bench_*.py")}
    assert listed == scripts


def test_the_arguments_dev_bench_passes_are_declared_by_each_bench() -> None:
    for name, args in load_dev().BENCHES:
        tree = ast.parse((ROOT / "bench" / f"bench_{name}.py").read_text())
        declared = {
            node.args[0].value
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        }
        assert set(args) <= declared, (name, args)


def test_an_unknown_bench_name_gets_one_line_and_installs_nothing() -> None:
    done = subprocess.run(
        [sys.executable, ROOT / "dev.py", "bench", "grading", "gradnig"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"TRAINER_VENV": "/nonexistent/venv", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert done.stdout.strip().splitlines() == [
        "Unknown bench gradnig: choose from grading, bulk, session, charts, memory, llm, web, "
        "telegram, drill, pg_driver"
    ]
    assert not Path("/nonexistent/venv").exists()
