"""prune(..., calibration=...) repairs the remaining weights by default, and the repair
is never worse than none on the calibration data, layer by layer."""

import numpy as np
import pytest

import onnxprune
from onnxprune.errors import BadArgumentError
from onnxprune.runtime import session

from .conftest import MODELS
from .test_cli import assert_clean_failure, run


def held_out_cosine(dense_path, model, x):
    a = session(str(dense_path), device="cpu").run(None, {"input": x})[0].reshape(len(x), -1)
    b = session(model, device="cpu").run(None, {"input": x})[0].reshape(len(x), -1)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


@pytest.mark.parametrize("name", ["resnet_basic_bn", "mobilenetv2"])
def test_recovery_runs_by_default_and_helps(name):
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((48, 3, 32, 32)).astype(np.float32)
    held = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    path = MODELS / f"{name}.onnx"
    plain = onnxprune.prune(str(path), ratio=0.3, round_to=1, calibration={"input": calib}, recover=False)
    fixed = onnxprune.prune(str(path), ratio=0.3, round_to=1, calibration={"input": calib})
    assert "recovery" not in plain.report and plain.plan.settings["recover"] is False
    rec = fixed.report["recovery"]
    assert fixed.plan.settings["recover"] is True and rec["layers"]
    for layer in rec["layers"].values():
        assert layer["error_after"] <= layer["error_before"] + 1e-9
    assert plain.plan.groups == fixed.plan.groups  # the same channels, only the weights differ
    assert held_out_cosine(path, fixed.model, held) > held_out_cosine(path, plain.model, held)


def test_recover_needs_calibration_data():
    with pytest.raises(BadArgumentError, match="needs calibration data"):
        onnxprune.prune(str(MODELS / "resnet_basic_bn.onnx"), ratio=0.3, recover=True)


def test_cli_reports_the_repair(tmp_path):
    out = tmp_path / "o.onnx"
    code, stdout, err = run("prune", MODELS / "resnet_basic_bn.onnx", "-o", out, "--ratio", "0.3", "--calib",
                            "random:16", "--repair-steps", "reconstruct,bn")
    assert code == 0, err
    assert "repair  " in stdout and "calibration error" in stdout
    code, _, err = run("prune", MODELS / "resnet_basic_bn.onnx", "-o", out, "--ratio", "0.3", "--calib",
                       "random:16", "--repair-steps", "magic")
    assert_clean_failure(code, err, 7, "unknown repair step")
    code, _, err = run("prune", MODELS / "resnet_basic_bn.onnx", "-o", out, "--ratio", "0.3", "--calib",
                       "random:16", "--token-mask", "attention_mask")
    assert_clean_failure(code, err, 7, "token mask 'attention_mask' is not an input")
    code, _, err = run("prune", MODELS / "resnet_basic_bn.onnx", "-o", out, "--ratio", "0.3", "--recover")
    assert_clean_failure(code, err, 7, "needs calibration data")
