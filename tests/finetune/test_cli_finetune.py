import json

import numpy as np
import onnx

from onnxprune import errors
from tests.conftest import MODELS
from tests.test_cli import assert_clean_failure, digest, run

DENSE = MODELS / "resnet_basic_bn.onnx"


def _calib(tmp_path, n=32):
    path = tmp_path / "calib.npz"
    np.savez(path, input=np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32))
    return path


def test_prune_finetune_then_finetune_again(tmp_path):
    calib = _calib(tmp_path)
    pruned, plan, report = tmp_path / "p.onnx", tmp_path / "plan.json", tmp_path / "r.json"
    code, out, err = run("prune", DENSE, "-o", pruned, "--ratio", "0.5", "--calib", calib, "--finetune", "--steps", "3",
                         "--batch-size", "8", "--plan-out", plan, "--report", report)
    assert code == 0, err
    assert "finetune  3 steps" in out
    assert json.loads(report.read_text())["finetune"]["steps"] == 3
    before = digest(pruned)
    again = tmp_path / "ft.onnx"
    code, out, err = run("finetune", DENSE, pruned, "-o", again, "--data", calib, "--steps", "2", "--batch-size", "8",
                         "--distill", "both", "--plan", plan, "--optimizer", "sgd", "--lr", "1e-3")
    assert code == 0, err
    assert "finetune  2 steps" in out and digest(pruned) == before
    onnx.checker.check_model(onnx.load(str(again)), full_check=True)


def test_finetune_bad_input_is_one_line(tmp_path):
    calib = _calib(tmp_path)
    pruned = MODELS / "resnet_basic_bn.onnx"
    before = digest(pruned)
    code, _, err = run("finetune", DENSE, pruned, "-o", pruned, "--data", calib)
    assert_clean_failure(code, err, errors.EXIT_BAD_ARGUMENT, "input model")
    out = tmp_path / "x.onnx"
    code, _, err = run("finetune", DENSE, pruned, "-o", out, "--data", tmp_path / "missing.npz")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = run("finetune", DENSE, MODELS / "gemm_variants.onnx", "-o", out, "--data", calib)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = run("finetune", DENSE, pruned, "-o", out, "--data", calib, "--lr", "-1")
    assert_clean_failure(code, err, errors.EXIT_BAD_ARGUMENT, "lr must be")
    assert not out.exists() and digest(pruned) == before
