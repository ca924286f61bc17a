"""Parameter gradients (weights, biases, norm scales, embedding tables) against central
finite differences, with the parameters as initializers and as graph inputs (a finetuning
loop turns its trainable initializers into inputs): float64 where ORT has the kernels,
float32 otherwise (Conv, ConvTranspose). Whole fixture models at the end: every float
parameter of their Conv/Gemm/MatMul/normalization/embedding nodes, two coordinates each,
against differences of a float64 twin."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxprune.calibration.autodiff import build_backward, fdcheck
from onnxprune.calibration.autodiff.rules import conv_weight
from onnxprune.finetune.trainable import as_inputs
from onnxprune.runtime import random_inputs

from ..conftest import MODELS
from . import test_autodiff as base
from .test_autodiff import fresh_rng  # noqa: F401  (autouse: same inputs in any order)
from .test_autodiff import away, build, check, node, pos, r
from .test_autodiff_layers import CONV_CASES
from .test_autodiff_models import TWIN_OPS, _double_graph

F64 = onnx.TensorProto.DOUBLE


def check_params(nodes, acts: dict, params: dict, consts: dict | None = None, wrt=None, outputs=None,
                 opset: int = 17, dtype="auto", tol: float | None = None, as_inputs: bool = False):
    """Gradients w.r.t. ``params`` (initializers; graph inputs when ``as_inputs``) against
    finite differences; returns (dtype used, GradModel)."""
    wrt = list(params) if wrt is None else wrt
    if as_inputs:
        return check(nodes, {**acts, **params}, consts, wrt=wrt, outputs=outputs, opset=opset, dtype=dtype, tol=tol)
    outputs = outputs or [nodes[-1].output[0]]
    dt, model, feeds, proj, result, grads = base.gradients_in(nodes, acts, {**params, **(consts or {})}, wrt,
                                                              outputs, opset, dtype)
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    bases = {w: values[w] if w in values else feeds[w] for w in wrt}
    base.compare_with_fd(model, feeds, proj, grads, wrt, bases, dt, tol)
    return dt, result


def both(*args, **kwargs):
    """check_params with the parameters as initializers, then as graph inputs."""
    out = check_params(*args, **kwargs)
    check_params(*args, as_inputs=True, **kwargs)
    return out


# ---- Conv: every formulation on every geometry it applies to ---------------------------------

WEIGHT_CASES = {
    **CONV_CASES,
    "groups_3_per_group_s2_dil": dict(x=(2, 6, 9, 8), w=(4, 3, 3, 2), pads=[1, 0, 2, 1], group=2, strides=[2, 1],
                                      dilations=[1, 2]),
    "depthwise_mult2_s2_asym": dict(x=(2, 3, 7, 6), w=(6, 1, 3, 3), pads=[0, 1, 2, 1], group=3, strides=[2, 2]),
    "depthwise_dil_empty_taps": dict(x=(1, 2, 2, 5), w=(2, 1, 3, 3), pads=[3, 1, 3, 1], group=2, dilations=[3, 1]),
    "depthwise_wide": dict(x=(2, 3, 5, 36), w=(3, 1, 3, 3), pads=[1, 1, 1, 1], group=3),
    "1x1_group2_s3": dict(x=(2, 4, 7, 7), w=(6, 2, 1, 1), group=2, strides=[3, 3]),
    "1x1_batch1": dict(x=(1, 5, 3, 3), w=(4, 5, 1, 1)),
    "1x1_wide": dict(x=(2, 3, 9, 9), w=(4, 3, 1, 1)),
    "conv1d_groups": dict(x=(2, 4, 11), w=(6, 2, 3), pads=[2, 0], group=2, strides=[2], dilations=[2]),
    "conv1d_depthwise": dict(x=(2, 3, 10), w=(3, 1, 5), pads=[2, 2], group=3),
    "conv3d_groups_s2": dict(x=(1, 4, 5, 4, 4), w=(2, 2, 3, 2, 3), pads=[1, 0, 1, 1, 1, 0], group=2, strides=[2, 1, 2]),
    "big_kernel": dict(x=(1, 2, 10, 10), w=(3, 2, 8, 7), pads=[1, 2, 0, 1], strides=[1, 2]),
}


def _applies(method: str, xs, ws, c) -> bool:
    group = c.get("group", 1)
    unpadded = not any(c.get("pads", [])) and c.get("auto_pad", "NOTSET") in ("NOTSET", "VALID")
    one = all(v == 1 for v in ws[2:]) and unpadded
    depthwise = ws[1] == 1 and group > 1
    return {"matmul": one, "gemm": one and group == 1, "taps": depthwise, "rows": depthwise and len(ws) == 4,
            "im2col": np.prod(ws[2:]) <= 49, "conv": True}[method]


PAIRS = [(case, m) for case, c in WEIGHT_CASES.items() for m in conv_weight.METHODS if _applies(m, c["x"], c["w"], c)]


@pytest.mark.parametrize("case,method", PAIRS, ids=[f"{c}-{m}" for c, m in PAIRS])
def test_conv_weight_and_bias(case, method, monkeypatch):
    monkeypatch.setattr(conv_weight, "pick", lambda *a: method)
    c = dict(WEIGHT_CASES[case])
    xs, ws = c.pop("x"), c.pop("w")
    dt, _ = check_params([node("Conv", ["x", "w", "bias"], **c)], {"x": away(*xs)}, {"w": r(*ws), "bias": r(ws[0])})
    assert dt is np.float32  # no double Conv in ORT CPU


@pytest.mark.parametrize("case", list(WEIGHT_CASES))
def test_conv_weight_picked_formulation_as_graph_inputs(case):
    c = dict(WEIGHT_CASES[case])
    xs, ws = c.pop("x"), c.pop("w")
    check_params([node("Conv", ["x", "w", "bias"], **c)], {"x": away(*xs)}, {"w": r(*ws), "bias": r(ws[0])},
                 wrt=["w", "bias", "x"], as_inputs=True)


def test_pick_per_case():
    def pick(x, w, y, group=1, pads=0):
        return conv_weight.pick(x, w, y, group, [pads] * (len(w) - 2), [pads] * (len(w) - 2))

    assert pick([16, 32, 56, 56], [16, 32, 1, 1], [16, 16, 56, 56]) == "matmul"
    assert pick([16, 960, 7, 7], [160, 960, 1, 1], [16, 160, 7, 7]) == "gemm"
    assert pick([16, 144, 56, 56], [144, 1, 3, 3], [16, 144, 56, 56], 144, 1) == "im2col"
    assert pick([16, 384, 14, 14], [384, 1, 3, 3], [16, 384, 14, 14], 384, 1) == "rows"
    assert pick([16, 64, 56, 56], [64, 64, 3, 3], [16, 64, 56, 56], 1, 1) == "im2col"
    assert pick([1, 3, 64, 64], [8, 3, 9, 9], [1, 8, 56, 56]) == "conv"


def test_conv_two_layers_weights_only():
    """The first conv reads a graph input that is not asked for: only weight gradients flow."""
    nodes = [node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1], group=2), node("Relu", ["a"], ["h"]),
             node("Conv", ["h", "w2"], ["y"], strides=[2, 2])]
    both(nodes, {"x": r(2, 4, 6, 6)}, {"w1": r(4, 2, 3, 3), "b1": r(4) + 0.5, "w2": r(3, 4, 1, 1)})


def test_constants_not_asked_for_get_no_gradient():
    model, feeds = build([node("Conv", ["x", "w", "bias"], pads=[1, 1, 1, 1])], {"x": r(1, 2, 5, 5)},
                         {"w": r(3, 2, 3, 3), "bias": r(3)}, ["y"], 17, np.float32)
    proj = fdcheck.random_projections(model, feeds)
    res, grads = fdcheck.gradients(model, ["w"], feeds, proj)
    assert set(grads) == {"w"} and not res.unavailable
    assert [o.name for o in res.model.graph.output][1:] == [res.grads["w"]]
    assert not any(n.op_type == "ReduceSum" for n in res.model.graph.node)  # no bias gradient built
    inits = {t.name for t in res.model.graph.initializer}
    assert {"w", "bias"} <= inits  # the parameters stay initializers


# ---- ConvTranspose ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kw,xs,ws", [
    (dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]), (2, 4, 4, 5), (4, 3, 3, 3)),
    (dict(strides=[2, 2], group=2), (2, 4, 4, 5), (4, 2, 3, 3)),
    (dict(strides=[1, 1], pads=[1, 0, 1, 0], dilations=[2, 1]), (2, 4, 4, 5), (4, 3, 3, 3)),
    (dict(strides=[2, 2], group=4, pads=[1, 1, 1, 1]), (1, 4, 5, 5), (4, 1, 4, 4)),
    (dict(strides=[3], pads=[1, 2], output_padding=[2]), (2, 3, 6), (3, 2, 4)),
])
@pytest.mark.parametrize("method", [None, "conv"])
def test_conv_transpose_weight_and_bias(kw, xs, ws, method, monkeypatch):
    if method:
        monkeypatch.setattr(conv_weight, "pick", lambda *a: method)
    cout = ws[1] * kw.get("group", 1)
    both([node("ConvTranspose", ["x", "w", "bias"], **kw)], {"x": r(*xs)}, {"w": r(*ws), "bias": r(cout)})


# ---- normalization -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,opset", [((2, 3, 4, 5), 17), ((2, 3, 4), 17), ((4, 3), 17), ((2, 3, 4), 11)])
def test_batch_norm_scale_and_bias(shape, opset):
    c = shape[1]
    dt, _ = both([node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)], {"x": r(*shape)},
                 {"s": r(c), "b": r(c)}, {"m": r(c), "v": pos(c)}, wrt=["s", "b", "x"], opset=opset)
    assert dt is np.float64


def test_batch_norm_statistics_unavailable_the_rest_flows():
    """Asking for every float initializer: the running statistics are unavailable, named;
    the scale, the bias and everything upstream still get their gradients."""
    nodes = [node("Mul", ["x", "k"], ["h"]), node("BatchNormalization", ["h", "s", "b", "m", "v"])]
    model, feeds = build(nodes, {"x": r(2, 3, 4)}, {"k": r(3, 1), "s": r(3), "b": r(3), "m": r(3), "v": pos(3)}, ["y"],
                         17, np.float64)
    res, grads = fdcheck.gradients(model, ["k", "s", "b", "m", "v"], feeds, fdcheck.random_projections(model, feeds))
    assert set(grads) == {"k", "s", "b"} and set(res.unavailable) == {"m", "v"}
    assert all("running mean/var" in why for why in res.unavailable.values())
    check_params(nodes, {"x": r(2, 3, 4)}, {"k": r(3, 1), "s": r(3), "b": r(3)}, {"m": r(3), "v": pos(3)})


def test_constant_operands_without_gradient_block_only_themselves():
    """Clip bounds and a Pad value asked for (a loop taking every float initializer)."""
    nodes = [node("Mul", ["x", "k"], ["h"]), node("Clip", ["h", "lo", "hi"], ["c"]),
             node("Pad", ["c", "pads", "val"], ["y"], mode="constant")]
    model, feeds = build(nodes, {"x": 3 * away(2, 5)}, {"k": r(5), "lo": np.array(-1.0), "hi": np.array(1.0),
                                                        "pads": np.array([0, 1, 0, 2]), "val": np.array(0.5)},
                         ["y"], 17, np.float64)
    res, grads = fdcheck.gradients(model, ["k", "lo", "hi", "val"], feeds, fdcheck.random_projections(model, feeds))
    assert set(grads) == {"k"} and set(res.unavailable) == {"lo", "hi", "val"}
    assert "Clip bound" in res.unavailable["lo"] and "Pad pads/value" in res.unavailable["val"]


def test_instance_norm_scale_and_bias():
    both([node("InstanceNormalization", ["x", "s", "b"], epsilon=1e-4)], {"x": r(2, 3, 4, 5)}, {"s": r(3), "b": r(3)},
         wrt=["s", "b", "x"])


@pytest.mark.parametrize("axis,scale", [(-1, (5,)), (1, (3, 4, 5)), (2, (1, 5)), (-2, (4, 5))])
def test_layer_norm_scale_and_bias(axis, scale):
    dt, _ = both([node("LayerNormalization", ["x", "s", "b"], axis=axis, epsilon=1e-4)], {"x": r(2, 3, 4, 5)},
                 {"s": r(*scale), "b": r(*scale)}, wrt=["s", "b", "x"])
    assert dt is np.float64


def test_layer_norm_scale_only_and_input_not_asked():
    both([node("LayerNormalization", ["x", "s"], epsilon=1e-4)], {"x": r(3, 6)}, {"s": r(6)})


@pytest.mark.parametrize("squares", ["Mul", "Pow"])
def test_rms_norm_decomposed_scale(squares):
    sq = node("Mul", ["x", "x"], ["sq"]) if squares == "Mul" else node("Pow", ["x", "two"], ["sq"])
    nodes = [sq, node("ReduceMean", ["sq", "ax"], ["ms"], keepdims=1), node("Add", ["ms", "eps"], ["mse"]),
             node("Sqrt", ["mse"], ["rms"]), node("Div", ["x", "rms"], ["xn"]), node("Mul", ["s", "xn"], ["y"])]
    consts = {"ax": np.array([-1]), "eps": np.array(1e-5), "two": np.array(2.0)}
    dt, _ = both(nodes, {"x": r(2, 3, 8)}, {"s": r(8)}, consts, wrt=["s", "x"], opset=18)
    assert dt is np.float64


# ---- Gemm / MatMul / Einsum with parameter operands -------------------------------------------------------


@pytest.mark.parametrize("ta", [0, 1])
@pytest.mark.parametrize("tb", [0, 1])
@pytest.mark.parametrize("cshape", [(5,), (1, 5), (3, 1), (), (3, 5)])
def test_gemm_weight_and_bias(ta, tb, cshape):
    a = r(4, 3) if ta else r(3, 4)
    w = r(5, 4) if tb else r(4, 5)
    dt, _ = both([node("Gemm", ["a", "w", "c"], transA=ta, transB=tb, alpha=0.7, beta=1.5)], {"a": a},
                 {"w": w, "c": r(*cshape)}, wrt=["w", "c", "a"])
    assert dt is np.float64


def test_gemm_weight_on_the_left():
    both([node("Gemm", ["w", "a"], transB=1)], {"a": r(3, 4)}, {"w": r(6, 4)})


@pytest.mark.parametrize("sa,sw", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 2, 3, 4), (4, 5)), ((2, 3, 4), (4,)),
                                   ((2, 3, 4), (2, 4, 5))])
def test_matmul_weight_right(sa, sw):
    both([node("MatMul", ["a", "w"])], {"a": r(*sa)}, {"w": r(*sw)}, wrt=["w", "a"])


@pytest.mark.parametrize("sw,sb", [((5, 4), (4, 3)), ((5, 4), (2, 4, 3)), ((4,), (2, 4, 3))])
def test_matmul_weight_left(sw, sb):
    both([node("MatMul", ["w", "b"])], {"b": r(*sb)}, {"w": r(*sw)})


@pytest.mark.parametrize("eq,sa,sw", [("bij,jk->bik", (2, 3, 4), (4, 5)), ("ij,kj->ik", (3, 4), (5, 4)),
                                      ("bsd,hd->bsh", (2, 3, 4), (6, 4))])
def test_einsum_weight(eq, sa, sw):
    both([node("Einsum", ["a", "w"], equation=eq)], {"a": r(*sa)}, {"w": r(*sw)}, opset=12)


# ---- elementwise with parameter operands (broadcast sums) -------------------------------------------------


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("sp,first", [((3, 1), False), ((1, 3, 1), True), ((4,), False), ((), True),
                                      ((2, 3, 4), False)])
def test_binary_parameter_operand(op, sp, first):
    p = pos(*sp) if op == "Div" and not first else r(*sp)
    inputs = ["p", "x"] if first else ["x", "p"]
    x = pos(2, 3, 4) if op == "Div" and first else r(2, 3, 4)
    dt, _ = both([node(op, inputs)], {"x": x}, {"p": p}, wrt=["p", "x"])
    assert dt is np.float64


@pytest.mark.parametrize("slope", [(3, 1, 1), (1,), (1, 3, 1, 1), ()])
def test_prelu_slope(slope):
    both([node("PRelu", ["x", "s"])], {"x": away(2, 3, 4, 5)}, {"s": r(*slope)}, wrt=["s", "x"])


def test_parameter_is_a_variable_not_a_folded_constant():
    """Pow's exponent asked for and overridable: the x gradient reads it at run time."""
    model, feeds = build([node("Pow", ["x", "e"])], {"x": pos(2, 3)}, {"e": np.array([1.5, 2.0, 3.0])}, ["y"], 17,
                         np.float64)
    model.graph.input.append(helper.make_tensor_value_info("e", F64, [3]))
    proj = fdcheck.random_projections(model, feeds)
    m, seeds = fdcheck.with_seeds(model, proj)
    res = build_backward(m, ["x", "e"], seeds, fdcheck.runtime_shapes(m, feeds))
    e2 = np.array([0.5, 1.0, 2.5])
    names = [res.grads["x"], res.grads["e"]]
    gx, ge = fdcheck._session(res.model).run(names, {**feeds, "e": e2})
    x = feeds["x"]
    want = proj["y"] * e2 * x ** (e2 - 1)
    np.testing.assert_allclose(gx, want, rtol=1e-10)
    np.testing.assert_allclose(ge, (proj["y"] * x ** e2 * np.log(x)).sum(axis=0), rtol=1e-10)


# ---- embedding tables ---------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [13, 17])
def test_gather_table_with_runtime_ids(opset):
    ids = np.array([[1, 4, 1, 0, -1], [6, 6, 2, -6, 3]])
    nodes = [node("Gather", ["table", "ids"], ["e"]), node("Tanh", ["e"])]
    _, res = both(nodes, {"ids": ids}, {"table": r(7, 4)}, opset=opset)
    assert res.opset == max(opset, 16)


def test_gather_runtime_ids_on_another_axis():
    check_params([node("Gather", ["table", "ids"], ["e"], axis=1), node("Tanh", ["e"])], {"ids": np.array([2, 0, 2])},
                 {"table": r(2, 4, 3)})


def test_gather_table_opset_11_needs_a_newer_opset():
    model, feeds = build([node("Gather", ["table", "ids"], ["e"]), node("Tanh", ["e"])], {"ids": np.array([[1, 1, 2]])},
                         {"table": r(5, 3)}, ["y"], 11, np.float64)
    res, _ = fdcheck.gradients(model, ["table"], feeds, fdcheck.random_projections(model, feeds))
    assert "needs opset 16" in res.unavailable["table"]


@pytest.mark.parametrize("ids", [[[2, 0, 2], [5, 2, 1]], [3, 1, 0], [2, 3, 4], [-1, 0, -1]])
def test_gather_table_with_constant_ids(ids):
    check_params([node("Gather", ["table", "ids"], ["e"], axis=0), node("Sin", ["e"])], {}, {"table": r(6, 3)},
                 {"ids": np.array(ids)}, opset=13)


# ---- whole fixture models ---------------------------------------------------------------------------------

PARAM_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
                "BatchNormalization": (1, 2), "LayerNormalization": (1, 2), "InstanceNormalization": (1, 2),
                "Gather": (0,), "Mul": (0, 1)}


def parameters(model: onnx.ModelProto) -> list[str]:
    floats = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    out = []
    for n in model.graph.node:
        for k in PARAM_INPUTS.get(n.op_type, ()):
            if k < len(n.input) and n.input[k] in floats and n.input[k] not in out:
                out.append(n.input[k])
    return out


def _twin(model: onnx.ModelProto, params: list[str]):
    """A float64 copy with the parameters as graph inputs, and their float64 values."""
    t = copy.deepcopy(model)
    _double_graph(t.graph)
    return t, as_inputs(t, params)


@pytest.mark.parametrize("name,runner", [
    ("convtranspose_grouped.onnx", "reference"),  # Conv, grouped ConvTranspose, BatchNormalization
    ("mobilenetv2.onnx", "reference"),  # depthwise and pointwise Conv, Gemm
    ("convnext.onnx", "reference"),  # depthwise 7x7, LayerNormalization, MatMul, layer scale
    ("transformers/gpt2_tiny.onnx", "ort"),  # Gemm, LayerNormalization, embedding tables
    ("transformers/llama_tiny.onnx", "ort"),  # MatMul, decomposed RMSNorm, embedding table
])
def test_fixture_parameter_gradients_match_finite_differences(name, runner):
    model = onnx.load(str(MODELS / name))
    feeds = random_inputs(model, batch=2, seed=0)
    proj = fdcheck.random_projections(model, feeds)
    params = parameters(model)
    res, grads = fdcheck.gradients(model, params, feeds, proj, optimize=True)
    onnx.checker.check_model(res.model, full_check=True)
    assert not res.unavailable, res.unavailable
    assert set(grads) == set(params)
    twin, values = _twin(model, params)
    feeds64 = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in feeds.items()}
    outs = list(proj)
    if runner == "ort":
        sess = fdcheck._session(twin)

        def run(f):
            return sess.run(outs, f)
    else:
        evaluator = ReferenceEvaluator(twin, new_ops=TWIN_OPS)

        def run(f):
            return evaluator.run(outs, f)

    def loss(overrides):
        return fdcheck.loss(dict(zip(outs, run({**feeds64, **values, **overrides}))), proj)

    rng = np.random.default_rng(0)
    eps = 1e-5
    for p in params:
        g = grads[p].reshape(-1).astype(np.float64)
        assert grads[p].shape == values[p].shape and np.isfinite(g).all()
        for c in {int(np.argmax(np.abs(g))), int(rng.integers(g.size))}:
            hi, lo = values[p].copy(), values[p].copy()
            hi.reshape(-1)[c] += eps
            lo.reshape(-1)[c] -= eps
            fd = (loss({p: hi}) - loss({p: lo})) / (2 * eps)
            scale = max(np.abs(g).max(), 1e-6)
            assert abs(g[c] - fd) <= 1e-3 * abs(fd) + 1e-3 * scale, (p, c, g[c], fd)


@pytest.mark.parametrize("name", ["mobilenetv2.onnx", "transformers/gpt2_tiny.onnx"])
def test_fixture_parameters_fed_as_graph_inputs_give_the_same_gradients(name):
    """What a finetuning loop runs: its trainable initializers turned into graph inputs."""
    model = onnx.load(str(MODELS / name))
    feeds = random_inputs(model, batch=2, seed=0)
    proj = fdcheck.random_projections(model, feeds)
    params = parameters(model)
    _, want = fdcheck.gradients(model, params, feeds, proj, optimize=True)
    fed = copy.deepcopy(model)
    values = as_inputs(fed, params)
    res, got = fdcheck.gradients(fed, params, {**feeds, **values}, proj, optimize=True)
    assert not res.unavailable and set(got) == set(params)
    onnx.checker.check_model(res.model, full_check=True)
    for p in params:
        np.testing.assert_allclose(got[p], want[p], rtol=1e-4, atol=1e-5 * np.abs(want[p]).max(), err_msg=p)
