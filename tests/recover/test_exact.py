"""Exactness oracle: when a removed channel is a linear combination of kept ones (or a
duplicate), least-squares reconstruction of its consumer reproduces the dense output."""

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxprune.recover import RecoverOptions, recover

from .helpers import dataset, dependent_rows, fvi, make_model, prune_channels, rel, run

EXACT = RecoverOptions(steps=("reconstruct",), ridge=1e-9)


def conv_model(kernel=3, stride=2, pad=1, dilation=1, auto_pad=None, duplicate=False, bias2=True, cin=3):
    rng = np.random.default_rng(0)
    w1, b1 = dependent_rows(rng, 6, cin)
    if duplicate:
        w1[5], b1[5] = w1[2], b1[2]
    w2 = rng.standard_normal((4, 6, kernel, kernel)).astype(np.float32)
    attrs = {"strides": [stride, stride], "dilations": [dilation, dilation]}
    if auto_pad:
        attrs["auto_pad"] = auto_pad
    else:
        attrs["pads"] = [pad] * 4
    inputs2 = ["h", "w2", "b2"] if bias2 else ["h", "w2"]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1"),
             helper.make_node("Conv", inputs2, ["y"], name="conv2", **attrs)]
    inits = {"w1": w1.reshape(6, cin, 1, 1), "b1": b1, "w2": w2}
    if bias2:
        inits["b2"] = rng.standard_normal(4).astype(np.float32)
    return make_model(nodes, [fvi("x", ["N", cin, 11, 11])], [fvi("y", ["N", 4, "H", "W"])], inits)


def gemm_model(trans_b=0, alpha=0.5, beta=2.0, with_c=True):
    rng = np.random.default_rng(1)
    w1, b1 = dependent_rows(rng, 6, 8)
    w2 = rng.standard_normal((6, 3)).astype(np.float32)
    inits = {"w1": w1, "b1": b1, "w2": w2.T.copy() if trans_b else w2}
    inputs2 = ["h", "w2"]
    if with_c:
        inits["c2"] = rng.standard_normal(3).astype(np.float32)
        inputs2.append("c2")
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Gemm", inputs2, ["y"], name="fc2", transB=trans_b, alpha=alpha, beta=beta)]
    return make_model(nodes, [fvi("x", ["N", 8])], [fvi("y", ["N", 3])], inits)


def matmul_model(bias2=False):
    rng = np.random.default_rng(2)
    w1, b1 = dependent_rows(rng, 6, 8)
    inits = {"w1": w1.T.copy(), "b1": b1, "w2": rng.standard_normal((6, 3)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
             helper.make_node("Add", ["m1", "b1"], ["h"], name="add1"),
             helper.make_node("MatMul", ["h", "w2"], ["m2" if bias2 else "y"], name="mm2")]
    if bias2:
        inits["b2"] = rng.standard_normal(3).astype(np.float32)
        nodes.append(helper.make_node("Add", ["m2", "b2"], ["y"], name="add2"))
    return make_model(nodes, [fvi("x", ["N", 5, 8])], [fvi("y", ["N", 5, 3])], inits)


def data(model, n, seed):
    rng = np.random.default_rng(seed)
    inp = model.graph.input[0]
    dims = [d.dim_value or n for d in inp.type.tensor_type.shape.dim]
    return {inp.name: rng.standard_normal(dims).astype(np.float32)}


def check_exact(model, producer, consumer, keep=(0, 1, 2, 3, 4)):
    dense, pruned, targets, _ = prune_channels(model, producer, list(keep))
    assert consumer in targets
    calib, held = data(dense, 48, 0), data(dense, 16, 1)
    repaired, report = recover(dense, pruned, targets, dataset(dense, calib, 16), EXACT, progress=False)
    onnx.checker.check_model(repaired, full_check=True)
    layer = report["layers"][consumer]
    assert layer["choice"] == "reconstruct" and layer["error_after"] < 1e-4 < layer["error_before"]
    for feeds in (calib, held):
        assert rel(run(dense, feeds)[0], run(repaired, feeds)[0]) < 1e-4
        assert rel(run(dense, feeds)[0], run(pruned, feeds)[0]) > 1e-2
    return repaired


@pytest.mark.parametrize("conv", [dict(kernel=3, stride=2, pad=1), dict(kernel=3, stride=1, pad=2, dilation=2),
                                  dict(kernel=1, stride=1, pad=0), dict(kernel=3, stride=2, auto_pad="SAME_UPPER"),
                                  dict(kernel=2, stride=2, pad=0, bias2=False)],
                         ids=["3x3s2p1", "3x3d2", "1x1", "same_upper", "2x2_nobias"])
def test_conv_consumer_exact(conv):
    repaired = check_exact(conv_model(**conv), "conv1", "conv2")
    conv2 = next(n for n in repaired.graph.node if n.name == "conv2")
    assert len(conv2.input) == 3 and conv2.input[2]  # a bias exists after the refit


def test_duplicate_channel_exact():
    check_exact(conv_model(duplicate=True), "conv1", "conv2")


@pytest.mark.parametrize("gemm", [dict(trans_b=0), dict(trans_b=1, alpha=1.0, beta=1.0), dict(with_c=False),
                                  dict(trans_b=1, beta=0.0)], ids=["transB0", "transB1", "no_c", "beta0"])
def test_gemm_consumer_exact(gemm):
    check_exact(gemm_model(**gemm), "fc1", "fc2")


@pytest.mark.parametrize("bias2", [False, True], ids=["bias_created", "bias_add"])
def test_matmul_consumer_exact(bias2):
    repaired = check_exact(matmul_model(bias2), "mm1", "mm2")
    adds = [n for n in repaired.graph.node if n.op_type == "Add"]
    assert len(adds) == 2  # the existing bias Add is reused; a missing one is created
    assert repaired.graph.output[0].name == "y"


def test_dense_model_is_not_modified():
    model = conv_model()
    dense, pruned, targets, _ = prune_channels(model, "conv1", [0, 1, 2, 3, 4])
    before = (dense.SerializeToString(), pruned.SerializeToString())
    recover(dense, pruned, targets, dataset(dense, data(dense, 16, 0)), EXACT, progress=False)
    assert (dense.SerializeToString(), pruned.SerializeToString()) == before
