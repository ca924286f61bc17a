"""Padding-aware repair: rows of padded tokens stay out of the statistics."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import BadArgumentError
from onnxprune.recover import RecoverOptions, recover
from onnxprune.recover.tokens import find_token_mask, row_mask

from .helpers import prune_ratio


def _mlp_with_mask(mask_name="attention_mask") -> onnx.ModelProto:
    """Token MLP (MatMul-Relu-MatMul on (batch, seq, 4)) then mean pooling over real tokens."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W1", (4, 12)), ("b1", (12,)), ("W2", (12, 6)), ("b2", (6,)))]
    inits.append(numpy_helper.from_array(np.array([2], np.int64), "ax2"))
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "ax1"))
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h"], name="act"),
        helper.make_node("MatMul", ["h", "W2"], ["y0"], name="fc2"),
        helper.make_node("Add", ["y0", "b2"], ["y"], name="fc2_bias"),
        helper.make_node("Cast", [mask_name], ["mf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Unsqueeze", ["mf", "ax2"], ["m3"], name="unsq"),
        helper.make_node("Mul", ["y", "m3"], ["ym"], name="mask_mul"),
        helper.make_node("ReduceSum", ["ym", "ax1"], ["s"], keepdims=0, name="sum"),
        helper.make_node("ReduceSum", ["m3", "ax1"], ["cnt"], keepdims=0, name="count"),
        helper.make_node("Div", ["s", "cnt"], ["out"], name="mean"),
    ]
    graph = helper.make_graph(
        nodes, "tokens",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4]),
         helper.make_tensor_value_info(mask_name, TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _padded(rng, n=24, seq=10):
    """Padded batch: real tokens ~N(0,1), padded positions garbage far from them."""
    lengths = rng.integers(2, seq + 1, n)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    x = rng.standard_normal((n, seq, 4)).astype(np.float32)
    x[mask == 0] = 30.0 * rng.standard_normal((int((mask == 0).sum()), 4)).astype(np.float32) + 20.0
    return x, mask


def _weights(model) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _repair(model, data, **options):
    from onnxprune.data import load_data

    dense, pruned, targets = prune_ratio(model, 0.5)
    ds = load_data(data, dense, batch_size=8)
    return recover(dense, pruned, targets, ds, RecoverOptions(**options), progress=False)


def test_masked_repair_equals_repair_on_real_tokens_only():
    model = _mlp_with_mask()
    x, mask = _padded(np.random.default_rng(1))
    real = x[mask == 1][:, None, :]  # the same real tokens, one per sequence, nothing padded
    fixed_ridge = {"ridge": 0.1, "steps": ("reconstruct", "bias")}
    masked, rep = _repair(model, {"x": x, "attention_mask": mask}, **fixed_ridge)
    alone, _ = _repair(model, {"x": real, "attention_mask": np.ones((len(real), 1), np.int64)}, **fixed_ridge)
    assert rep["token_mask"] == "attention_mask"
    a, b = _weights(masked), _weights(alone)
    for name in ("W2", "b2"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5)
    unmasked, rep_all = _repair(model, {"x": x, "attention_mask": mask}, token_mask=None, **fixed_ridge)
    assert rep_all["token_mask"] is None
    assert not np.allclose(_weights(unmasked)["W2"], a["W2"], rtol=1e-2, atol=1e-3)  # the garbage rows mattered


def test_masked_repair_fits_real_tokens_better():
    """On held-out padded data the pooled output (real tokens only) is closer to the dense
    model's when the repair ignores padded rows."""
    from onnxprune.runtime import session

    model = _mlp_with_mask()
    rng = np.random.default_rng(2)
    x, mask = _padded(rng, n=64)
    xt, mt = _padded(rng, n=64)
    dense = session(model).run(None, {"x": xt, "attention_mask": mt})[0]

    def error(**opts):
        repaired, _ = _repair(model, {"x": x, "attention_mask": mask}, **opts)
        out = session(repaired).run(None, {"x": xt, "attention_mask": mt})[0]
        return float(np.linalg.norm(out - dense) / np.linalg.norm(dense))

    assert error() < error(token_mask=None)


def test_find_token_mask():
    model = _mlp_with_mask()
    assert find_token_mask(model, "auto") == "attention_mask"
    assert find_token_mask(model, None) is None
    assert find_token_mask(model, "attention_mask") == "attention_mask"
    assert find_token_mask(_mlp_with_mask("input_mask"), "auto") is None  # only the conventional name is guessed
    assert find_token_mask(_mlp_with_mask("input_mask"), "input_mask") == "input_mask"
    with pytest.raises(BadArgumentError, match="not an input"):
        find_token_mask(model, "mask")
    with pytest.raises(BadArgumentError, match="rank"):
        find_token_mask(model, "x")


def test_row_mask_only_where_rows_are_tokens():
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    assert row_mask(mask, np.zeros((2, 3, 5)), 2).tolist() == [True, True, False, True, False, False]
    assert row_mask(mask, np.zeros((2, 3, 5)), 1) is None  # channels not last
    assert row_mask(mask, np.zeros((2, 5)), 1) is None  # pooled rows
    assert row_mask(mask, np.zeros((2, 4, 5)), 2) is None  # another sequence length
    assert row_mask(None, np.zeros((2, 3, 5)), 2) is None
