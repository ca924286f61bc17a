"""Repair on random-weight fixtures pruned at 30%: no layer's calibration error grows,
the output moves closer to the dense model's (on the calibration data and on held-out
data), and the repaired model is valid, runs, and keeps the dense model's interface."""

import numpy as np
import onnx
import pytest

from onnxprune.recover import RecoverOptions, recover
from onnxprune.runtime import random_inputs

from ..conftest import MODELS
from .helpers import prune_ratio, random_dataset, rel, run

FIXTURES = ["resnet_basic_bn", "mobilenetv2", "flatten_head", "matmul_tokens"]


def _io(model):
    init = {t.name for t in model.graph.initializer}
    return [(v.name, v.type.SerializeToString()) for v in model.graph.input if v.name not in init] + [
        (v.name, v.type.SerializeToString()) for v in model.graph.output]


def output_error(dense, model, feeds):
    return sum(rel(a, b) for a, b in zip(run(dense, feeds), run(model, feeds)))


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("steps", [("reconstruct", "bias", "bn"), ("bias", "bn")], ids=["ls", "no_ls"])
def test_repair_never_worse(name, steps):
    dense, pruned, targets = prune_ratio(MODELS / f"{name}.onnx", 0.3)
    ds = random_dataset(dense, 32, 8)
    repaired, report = recover(dense, pruned, targets, ds, RecoverOptions(steps=steps), progress=False)
    onnx.checker.check_model(repaired, full_check=True)
    assert _io(repaired) == _io(dense)
    assert report["steps"] == list(steps) and report["samples"] == 32 and not report["skipped"]
    assert set(targets) <= set(report["layers"])
    for layer, r in report["layers"].items():
        assert r["error_after"] <= r["error_before"] * (1 + 1e-9) + 1e-12, layer
    calib = ds.batches[0]
    held = random_inputs(dense, seed=1234, batch=16)
    outs = run(repaired, held)
    assert [o.shape for o in outs] == [o.shape for o in run(dense, held)]
    for feeds in (calib, held):
        assert output_error(dense, repaired, feeds) < output_error(dense, pruned, feeds)


def test_report_is_json_and_counts_steps():
    import json

    dense, pruned, targets = prune_ratio(MODELS / "resnet_basic_bn.onnx", 0.3)
    _, report = recover(dense, pruned, targets, random_dataset(dense, 16, 8),
                        RecoverOptions(steps=("bias", "bn"), max_samples=8), progress=False)
    json.dumps(report)
    assert report["samples"] == 8 and report["waves"] >= 1 and report["seconds"] >= 0
    bns = [r for r in report["layers"].values() if r["op"] == "BatchNormalization"]
    assert bns and all("statistics_fix" in r for r in bns)


def test_no_steps_changes_nothing():
    dense, pruned, targets = prune_ratio(MODELS / "flatten_head.onnx", 0.3)
    repaired, report = recover(dense, pruned, targets, random_dataset(dense, 8, 8), RecoverOptions(steps=()),
                               progress=False)
    assert report["layers"] == {}
    feeds = random_inputs(dense, seed=3, batch=2)
    np.testing.assert_array_equal(run(pruned, feeds)[0], run(repaired, feeds)[0])


def test_wide_layers_and_dense_inputs_options():
    dense, pruned, targets = prune_ratio(MODELS / "flatten_head.onnx", 0.3)
    ds = random_dataset(dense, 16, 8)
    _, report = recover(dense, pruned, targets, ds, RecoverOptions(max_dim=64), progress=False)
    wide = [k for k, why in report["skipped"].items() if "max_dim" in why]
    assert wide and all(report["layers"][k]["choice"] in ("bias", "none") for k in wide)
    repaired, report = recover(dense, pruned, targets, ds, RecoverOptions(inputs="dense"), progress=False)
    assert report["waves"] == 1  # not sequential: every layer in one pass
    held = random_inputs(dense, seed=5, batch=8)
    assert output_error(dense, repaired, held) < output_error(dense, pruned, held)
