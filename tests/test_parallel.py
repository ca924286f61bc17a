"""Execution backends (onnxprune.parallel): this process, worker processes and Ray give
the same results in task order; the sensitivity sweep on a local Ray instance started
here equals the serial run; a Ray cluster that cannot be used is one stderr line and
exit code 13, never a traceback. The Ray tests skip when ray is not installed."""

import json
import logging
import os
import socket
import subprocess
import sys
import warnings

import numpy as np
import pytest

from onnxprune import errors, parallel
from onnxprune.errors import BadArgumentError, ClusterError
from onnxprune.parallel import Processes, Ray, Serial, backend
from tests.conftest import MODELS, ROOT

RESNET = MODELS / "resnet_basic_bn.onnx"


def _setup(threads, base):
    return {"base": base, "threads": threads}


def _task(state, x):
    if x < 0:
        raise BadArgumentError(f"negative {x}")
    return state["base"] + x * x, state["threads"]


def _no_setup(*args):
    raise AssertionError("given a local state, the serial backend builds none")


TASKS = [5, 0, 3, 1, 6, 2, 4]
EXPECTED = [10 + x * x for x in TASKS]


def test_serial_and_processes_give_ordered_equal_results():
    done = []
    serial = Serial().map(_task, TASKS, _setup, (10,), on_result=lambda: done.append(1))
    assert [r for r, _ in serial] == EXPECTED and len(done) == len(TASKS)
    assert {t for _, t in serial} == {None}  # this process: no thread limit
    assert Serial().map(_task, TASKS, _no_setup, local={"base": 10, "threads": None}) == serial
    done.clear()
    pooled = Processes(2).map(_task, TASKS, _setup, (10,), on_result=lambda: done.append(1))
    assert [r for r, _ in pooled] == EXPECTED and len(done) == len(TASKS)
    assert {t for _, t in pooled} == {max(1, (os.cpu_count() or 1) // 2)}
    # a single task runs here, on the local state, without starting processes
    assert Processes(2).map(_task, [3], _no_setup, local={"base": 0, "threads": None}) == [(9, None)]


@pytest.mark.parametrize("runner", [Serial(), Processes(2)], ids=["serial", "processes"])
def test_a_task_error_propagates_as_raised(runner):
    with pytest.raises(BadArgumentError, match="negative -1"):
        runner.map(_task, [1, -1, 2], _setup, (0,))


def test_backend_choice_and_arguments():
    assert isinstance(backend(1), Serial)
    assert isinstance(backend(3), Processes) and backend(3).workers == 3
    assert backend(0).workers == (os.cpu_count() or 1)
    assert isinstance(backend(1, "auto"), Ray)  # nothing is connected before it is used
    with pytest.raises(BadArgumentError, match=">= 0"):
        backend(-1)
    with pytest.raises(BadArgumentError, match="exclude each other"):
        backend(2, "auto")
    with pytest.raises(BadArgumentError, match="--ray takes"):
        backend(1, " ")


def test_ray_not_installed_is_a_cluster_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ClusterError, match=r"pip install 'onnxprune\[ray\]'") as exc:
        Ray("auto").check()
    assert exc.value.exit_code == errors.EXIT_CLUSTER == 13
    assert 13 in errors.EXIT_CODES


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_unreachable_address_fails_before_ray_tries():
    port = closed_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ClusterError, match=f"cannot connect to a Ray cluster at 127.0.0.1:{port}"):
            parallel._probe(None, address)
    for bad in ("nohost", "host:port", ":80"):
        with pytest.raises(BadArgumentError, match="expected 'auto', host:port"):
            parallel._probe(None, bad)


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "onnxprune", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd or ROOT)


def one_line(proc, code, fragment):
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in lines[0]


def test_cli_unreachable_cluster_is_one_line_and_exit_13(tmp_path):
    """With or without ray installed (the line differs, the code does not)."""
    port = closed_port()
    out = tmp_path / "s.json"
    proc = run_cli("sensitivity", RESNET, "--calib", "random:4", "--ray", f"127.0.0.1:{port}", "--out", out)
    one_line(proc, errors.EXIT_CLUSTER, "--ray")
    assert not out.exists()
    small = tmp_path / "small.onnx"
    proc = run_cli("prune", RESNET, "-o", small, "--target-macs", "0.7", "--allocation", "sensitivity",
                   "--calib", "random:4", "--ray", f"127.0.0.1:{port}")
    one_line(proc, errors.EXIT_CLUSTER, "--ray")
    assert not small.exists()


# ---- on a local Ray instance started here -------------------------------------------


@pytest.fixture(scope="module")
def ray_address():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # workers import this module's helpers
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


def test_ray_map_equals_serial_and_keeps_the_callers_connection(ray_address):
    import ray

    done = []
    with Ray(ray_address) as runner:
        out = runner.map(_task, TASKS, _setup, (10,), on_result=lambda: done.append(1))
        assert runner.workers == 2
        with pytest.raises(BadArgumentError, match="negative -1"):
            runner.map(_task, [1, -1, 2], _setup, (0,))
    assert [r for r, _ in out] == EXPECTED and {t for _, t in out} == {1} and len(done) == len(TASKS)
    assert ray.is_initialized()  # this process connected itself: the backend leaves that alone


def sweep(model, data, **kw):
    from onnxprune.sensitivity import sensitivity

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return sensitivity(model, data, **kw)


def comparable(result):
    out = json.loads(json.dumps(result))
    out.pop("seconds")
    for key in ("jobs", "ray"):
        out["settings"].pop(key)
    return out


def calib(n=12):
    rng = np.random.default_rng(1)
    return {"input": rng.standard_normal((n, 3, 32, 32)).astype(np.float32), "y": rng.integers(0, 10, n)}


def test_sensitivity_on_ray_equals_serial(ray_address):
    kw = dict(criterion="activation", ratios=(0.3, 0.6), metric="cosine", labels="y", groups=[0, 3, 6],
              batch_size=4, folds=2, target_macs=0.9)
    serial = sweep(RESNET, calib(), **kw)
    on_ray = sweep(RESNET, calib(), ray=ray_address, **kw)
    assert on_ray["settings"]["ray"] == ray_address and on_ray["settings"]["jobs"] == 2
    assert comparable(on_ray) == comparable(serial)
    assert "measured_fold_drops" in on_ray["allocation"]


def test_cli_connects_to_the_ray_address(ray_address, tmp_path):
    """A separate process connects by address (the path a user takes) and gets the
    serial run's curves; stderr stays empty."""
    data = tmp_path / "calib.npz"
    np.savez(data, **calib(8))
    args = ["--calib", data, "--labels", "y", "--ratios", "0.5", "--groups", "0,3", "--json"]
    proc = run_cli("sensitivity", RESNET, *args, "--ray", ray_address, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    on_ray = json.loads(proc.stdout)
    serial = sweep(RESNET, str(data), labels="y", ratios=(0.5,), groups=[0, 3], input_shapes={})
    assert on_ray["settings"]["ray"] == ray_address
    assert comparable(on_ray) == comparable(serial)


def test_prune_sensitivity_allocation_on_ray_equals_serial(ray_address):
    import onnxprune

    x = calib(8)["input"]
    kw = dict(target_macs=0.7, allocation="sensitivity", sensitivity_ratios=(0.3, 0.6), calibration={"input": x},
              recover=False, round_to=1, device="cpu")
    serial = onnxprune.prune(str(RESNET), **kw)
    on_ray = onnxprune.prune(str(RESNET), ray=ray_address, **kw)
    assert on_ray.plan.groups == serial.plan.groups and on_ray.plan.groups
    assert on_ray.report["sensitivity"] == serial.report["sensitivity"]
