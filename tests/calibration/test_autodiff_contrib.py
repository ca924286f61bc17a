"""Backward rules of ONNX Runtime's contrib ops (com.microsoft) against central finite
differences. ORT has float32 kernels only for these, so the harness falls back to float32
(eps 1e-2, 1e-2 relative error), as for any op without a double kernel."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.calibration import test_autodiff as t
from tests.calibration.test_autodiff import fresh_rng  # noqa: F401  (autouse: same inputs in any order)

MS = "com.microsoft"


def ms(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), name=f"{op.lower()}_ms", domain=MS, **attrs)


@pytest.mark.parametrize("op,with_bias", [("Gelu", False), ("FastGelu", False), ("FastGelu", True),
                                          ("BiasGelu", True)])
def test_gelu_family(op, with_bias):
    inputs = {"x": t.r(2, 3, 8)}
    names = ["x"]
    if with_bias:
        inputs["bias"] = t.r(8)
        names.append("bias")
    dt, _ = t.check([ms(op, names)], inputs)
    assert dt is np.float32 or dt is np.float64


def test_quick_gelu():
    t.check([ms("QuickGelu", ["x"], alpha=1.5)], {"x": t.r(3, 8)})


@pytest.mark.parametrize("bias", [False, True])
def test_skip_layer_norm(bias):
    names = ["x", "skip", "gamma", "beta"] + (["bias"] if bias else [])
    inputs = {"x": t.r(2, 3, 8), "skip": t.r(2, 3, 8), "gamma": t.pos(8), "beta": t.r(8)}
    if bias:
        inputs["bias"] = t.r(8)
    t.check([ms("SkipLayerNormalization", names, epsilon=1e-5)], inputs)


def test_skip_layer_norm_with_the_sum_output():
    """The input+skip+bias output feeds the next residual: its gradient adds in."""
    names = ["x", "skip", "gamma", "beta"]
    node = ms("SkipLayerNormalization", names, ("y", "", "", "s"), epsilon=1e-5)
    inputs = {"x": t.r(2, 3, 8), "skip": t.r(2, 3, 8), "gamma": t.pos(8), "beta": t.r(8)}
    t.check([node], inputs, outputs=["y", "s"])


def test_skip_simplified_layer_norm():
    names = ["x", "skip", "gamma"]
    inputs = {"x": t.r(2, 3, 8), "skip": t.r(2, 3, 8), "gamma": t.pos(8)}
    t.check([ms("SkipSimplifiedLayerNormalization", names, epsilon=1e-5)], inputs)


@pytest.mark.parametrize("name", ["bert_tiny_fused", "bert_tiny_fused_mha"])
def test_taylor_scores_the_fused_fixture_without_a_fallback(name):
    import onnxprune
    from tests.conftest import MODELS

    model = onnx.load(str(MODELS / "transformers" / f"{name}.onnx"))
    calib = {"input_ids": np.random.default_rng(0).integers(0, 100, (8, 8)).astype(np.int64)}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no group may be left unscored
        result = onnxprune.prune(model, ratio=0.25, round_to=1, criterion="taylor", calibration=calib,
                                 progress=False, recover=False)
    assert result.report["groups_pruned"] == 4


@pytest.mark.parametrize("mask", [None, "lengths", "raw"])
def test_attention(mask):
    """Input, packed QKV weight and bias, with a padding mask given as lengths or 0/1."""
    names = ["x", "w", "bias"]
    inputs = {"x": t.r(2, 3, 8), "w": t.r(8, 12) * 0.5, "bias": t.r(12)}
    inits = {}
    if mask == "lengths":
        names.append("m")
        inits["m"] = np.array([3, 2], dtype=np.int32)
    elif mask == "raw":
        names.append("m")
        inits["m"] = np.array([[1, 1, 0], [1, 1, 1]], dtype=np.int32)
    t.check([ms("Attention", names, num_heads=2)], inputs, inits)


def test_attention_after_head_dim_pruning():
    """Q/K heads of 3 dims, V heads of 2 (qkv_hidden_sizes), the dense scale pinned."""
    inputs = {"x": t.r(2, 3, 8), "w": t.r(8, 16) * 0.5, "bias": t.r(16)}
    node = ms("Attention", ["x", "w", "bias"], num_heads=2, qkv_hidden_sizes=[6, 6, 4], scale=0.35)
    t.check([node], inputs)


@pytest.mark.parametrize("mask", [None, "lengths"])
def test_multi_head_attention(mask):
    names = ["q", "k", "v", "bias"]
    inputs = {"q": t.r(2, 3, 8), "k": t.r(2, 4, 8), "v": t.r(2, 4, 8), "bias": t.r(24)}
    inits = {}
    if mask:
        names.append("m")
        inits["m"] = np.array([4, 2], dtype=np.int32)
    t.check([ms("MultiHeadAttention", names, num_heads=2)], inputs, inits)
