"""The README's tour runs as written (on a fixture standing in for model.onnx)."""

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import MODELS, ROOT

README = (ROOT / "README.md").read_text()
BUDGET_EXIT = 12  # a --max-drop that a random-weight fixture misses is a documented outcome


def tour_commands() -> list[str]:
    block = README.split("## Command line", 1)[1].split("Main `prune` options", 1)[0]
    lines = [l.strip() for l in block.splitlines() if l.strip().startswith("onnxprune ")]
    return [re.sub(r"\s+#.*$", "", l) for l in lines]


def setup_command() -> str:
    line = next(l for l in README.splitlines() if "pip install -e . &&" in l)
    return line.split("&&", 1)[1].strip()


@pytest.fixture
def workdir(tmp_path):
    shutil.copy(MODELS / "resnet_basic.onnx", tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "val.npz", input=rng.standard_normal((8, 3, 32, 32)).astype(np.float32),
             y=rng.integers(0, 10, 8))
    return tmp_path


def _run(cmd: str, cwd):
    args = cmd.split()
    assert args[0] == "onnxprune"
    return subprocess.run([sys.executable, "-m", "onnxprune", *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_tour_commands_run_as_written(workdir):
    commands = tour_commands()
    assert len(commands) >= 8
    for cmd in commands:
        proc = _run(cmd, workdir)
        allowed = (0, BUDGET_EXIT) if "--max-drop" in cmd else (0,)
        assert proc.returncode in allowed, f"{cmd}: exit {proc.returncode}: {proc.stderr}"
        assert "Traceback" not in proc.stderr
    assert (workdir / "small.onnx").exists() and (workdir / "plan.json").exists()


def test_setup_command_runs(tmp_path):
    (tmp_path / "models").mkdir()
    shutil.copy(MODELS / "mobilenetv2.onnx", tmp_path / "models" / "mobilenetv2.onnx")
    proc = _run(setup_command(), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mobilenetv2_pruned.onnx").exists() and (tmp_path / "report.json").exists()


def test_python_tour_runs(workdir, monkeypatch):
    code = README.split("```python", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(workdir)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    exec(compile(code, "README.md", "exec"), {"x": x, "print": lambda *a, **k: None})
    assert (workdir / "small.onnx").exists()
