"""Backward rules against central finite differences: elementwise ops and activations.

Every case builds a tiny graph, takes L = sum(R * output) for a random R, and compares
the ORT-computed gradient at the graph's activation inputs with central differences of
the forward graph run in ORT: in float64 where ORT has double kernels for every op
involved (forward and backward), to ~1e-6; otherwise in float32 with eps 1e-2 and a 1e-2
relative error on the gradient vector. The shared harness :func:`check` lives here.
"""

from __future__ import annotations

import zlib

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxprune.calibration.autodiff import fdcheck

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def fresh_rng(request):
    """Every test draws the same inputs whichever tests run before it."""
    global RNG
    RNG = np.random.default_rng(zlib.crc32(request.node.name.encode()))
TOL = {np.float64: (1e-6, 1e-6), np.float32: (1e-2, 1e-2)}  # (eps, relative tolerance)
FULL_FD_MAX = 160  # up to this many elements every coordinate is checked, else a sample


def r(*shape):
    return RNG.standard_normal(shape)


def away(*shape, gap=0.2):
    """Random values at least ``gap`` away from zero (clear of kinks at 0)."""
    v = RNG.standard_normal(shape)
    return np.sign(v + (v == 0)) * (gap + np.abs(v))


def distinct(*shape, step=0.1):
    """Distinct values ``step`` apart in random order (no near-ties for max-like ops)."""
    n = int(np.prod(shape))
    return (RNG.permutation(n) - n / 2).reshape(shape) * step


def pos(*shape):
    return RNG.uniform(0.5, 2.0, shape)


def _missing_kernel(exc: Exception) -> bool:
    text = str(exc)
    return ("NOT_IMPLEMENTED" in text or "Could not find an implementation" in text
            or "Type 'tensor(double)'" in text)


def build(nodes, inputs: dict, inits: dict, outputs, opset: int, dtype):
    def conv(a):
        a = np.asarray(a)
        return a.astype(dtype) if dtype is not None and a.dtype.kind == "f" else a

    feeds = {k: conv(v) for k, v in inputs.items()}
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [onnx.ValueInfoProto(name=o) for o in outputs],
        [onnx.numpy_helper.from_array(conv(v), k) for k, v in (inits or {}).items()])
    ir = max(8, helper.find_min_ir_version_for([helper.make_opsetid("", opset)]))
    domains = sorted({n.domain for n in nodes} - {"", "ai.onnx"})  # com.microsoft contrib ops
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)] +
                              [helper.make_opsetid(d, 1) for d in domains], ir_version=ir)
    model = onnx.shape_inference.infer_shapes(model)
    del model.graph.value_info[:]
    float_feed = next((v for v in feeds.values() if v.dtype.kind == "f"), None)
    for o in model.graph.output:  # outputs of ops ONNX cannot infer (contrib ops): like the first input
        if not o.type.tensor_type.elem_type and float_feed is not None:
            o.type.CopyFrom(helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(float_feed.dtype),
                                                          float_feed.shape))
    return model, feeds


def gradients_in(nodes, inputs: dict, inits: dict | None, wrt, outputs, opset: int, dtype):
    """(dtype used, model, feeds, projections, GradModel, gradients) of the graph built from
    ``nodes``: float64 first when ``dtype`` is "auto", float32 where ORT lacks a double kernel."""
    tries = [np.float64, np.float32] if dtype == "auto" else [dtype]
    for dt in tries:
        model, feeds = build(nodes, inputs, inits, outputs, opset, None if dtype is None else dt)
        try:
            proj = fdcheck.random_projections(model, feeds)
            result, grads = fdcheck.gradients(model, wrt, feeds, proj)
        except Exception as exc:  # noqa: BLE001 - a missing double kernel: retry in float32
            if dt is not tries[-1] and _missing_kernel(exc):
                continue
            raise
        break
    assert not result.unavailable, result.unavailable
    onnx.checker.check_model(result.model, full_check=True)
    return dt, model, feeds, proj, result, grads


def compare_with_fd(model, feeds, proj, grads, wrt, bases: dict, dt, tol: float | None) -> None:
    """Each gradient in ``wrt`` against central differences (every coordinate when small,
    else a sample and two random directions); ``bases``: each tensor's value for ``feeds``."""
    eps, rtol = TOL.get(dt, (1e-2, 1e-2))
    rtol = tol or rtol
    for w in wrt:
        g = grads[w].astype(np.float64).reshape(-1)
        assert grads[w].shape == bases[w].shape, (w, grads[w].shape, bases[w].shape)
        coords = None if g.size <= FULL_FD_MAX else RNG.choice(g.size, 48, replace=False)
        dirs = [] if g.size <= FULL_FD_MAX else [RNG.standard_normal(bases[w].shape) for _ in range(2)]
        fd, fd_dirs = fdcheck.fd_gradient(model, w, feeds, proj, coords, dirs, eps, base=bases[w])
        got = g if coords is None else g[coords]
        scale = max(np.linalg.norm(fd), 1e-3)
        assert np.linalg.norm(got - fd) <= rtol * scale, (w, dt, np.linalg.norm(got - fd) / scale, got[:6], fd[:6])
        for d, v in zip(dirs, fd_dirs):
            want = float(np.dot(g, d.reshape(-1)))
            assert abs(want - v) <= rtol * max(abs(v), np.linalg.norm(g) * 0.1, 1e-3), (w, dt, want, v)


def check(nodes, inputs: dict, inits: dict | None = None, wrt=None, outputs=None, opset: int = 17,
          dtype="auto", tol: float | None = None):
    """Compare ORT gradients with finite differences; returns (dtype used, GradModel)."""
    outputs = outputs or [nodes[-1].output[0]]
    wrt = list(inputs) if wrt is None else wrt
    dt, model, feeds, proj, result, grads = gradients_in(nodes, inputs, inits, wrt, outputs, opset, dtype)
    compare_with_fd(model, feeds, proj, grads, wrt, {w: feeds[w] for w in wrt}, dt, tol)
    return dt, result


_COUNT = iter(range(1 << 30))


def node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), name=f"{op.lower()}_{next(_COUNT)}", **attrs)


# ---- elementwise --------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
@pytest.mark.parametrize("sx,sy", [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (3, 1)), ((3, 1), (2, 3, 4)), ((1, 3, 1), (2, 1, 4))])
def test_binary_broadcast(op, sx, sy):
    assert check([node(op, ["x", "z"])], {"x": r(*sx), "z": r(*sy)})[0] is np.float64


def test_binary_with_constant():
    check([node("Mul", ["x", "c"], ["m"]), node("Sub", ["k", "m"])], {"x": r(2, 3, 4)}, {"c": r(3, 1), "k": r(4)})


def test_div():
    assert check([node("Div", ["x", "z"])], {"x": r(2, 3, 4), "z": pos(3, 1)})[0] is np.float64


@pytest.mark.parametrize("op,make", [
    ("Neg", r), ("Identity", r), ("Exp", r), ("Log", pos), ("Sqrt", pos), ("Reciprocal", away), ("Abs", away),
    ("Sin", r), ("Cos", r), ("Relu", away), ("Sigmoid", r), ("Tanh", r), ("Erf", r), ("Softplus", r),
    ("Softsign", away), ("HardSwish", away), ("Elu", away), ("Selu", away), ("Celu", away),
])
def test_unary(op, make):
    x = make(2, 3, 5)
    if op == "HardSwish":
        x = x * 2.5  # both saturated ends and the ramp
        x[np.abs(np.abs(x) - 3) < 0.1] = 1.0
    check([node(op, ["x"])], {"x": x}, opset=18)


def test_unary_float64_where_ort_has_kernels():
    assert check([node("Sigmoid", ["x"], ["s"]), node("Exp", ["s"], ["e"]), node("Tanh", ["e"])],
                 {"x": r(3, 4)})[0] is np.float64


def test_mish():
    check([node("Mish", ["x"])], {"x": r(2, 7)}, opset=18)


@pytest.mark.parametrize("approx", ["none", "tanh"])
def test_gelu(approx):
    check([node("Gelu", ["x"], approximate=approx)], {"x": 2 * r(3, 6)}, opset=20)


def test_leaky_relu_and_thresholded_relu():
    check([node("LeakyRelu", ["x"], ["a"], alpha=0.3), node("ThresholdedRelu", ["a"], alpha=0.5)],
          {"x": away(3, 8) + 0.5 * (np.abs(away(3, 8)) > 0.7)})


def test_prelu_constant_slope_and_activation_slope():
    check([node("PRelu", ["x", "s"])], {"x": away(2, 3, 4)}, {"s": r(3, 1)})
    check([node("PRelu", ["x", "s"])], {"x": away(2, 3, 4), "s": r(3, 1)})


@pytest.mark.parametrize("opset", [11, 17])
def test_clip_relu6(opset):
    x = 4 * away(2, 3, 5)
    x[np.abs(x - 6) < 0.2] = 3.0
    check([node("Clip", ["x", "lo", "hi"])], {"x": x}, {"lo": np.array(0.0), "hi": np.array(6.0)}, opset=opset)


def test_clip_one_bound():
    check([node("Clip", ["x", "", "hi"])], {"x": away(4, 5)}, {"hi": np.array(0.0)})


def test_hard_sigmoid():
    x = 3 * away(3, 7)
    x[np.abs(np.abs(x) - 2.5) < 0.2] = 1.0
    check([node("HardSigmoid", ["x"], alpha=0.2, beta=0.5)], {"x": x})


@pytest.mark.parametrize("e", [2.0, 3.0, 0.5, "per_channel"])
def test_pow_constant_exponent(e):
    ev = np.array([[1.5], [2.0], [3.0]]) if e == "per_channel" else np.array(e)
    check([node("Pow", ["x", "e"])], {"x": pos(2, 3, 4)}, {"e": ev})


def test_pow_activation_exponent():
    check([node("Pow", ["x", "e"])], {"x": pos(2, 3, 4), "e": r(3, 1)})


def test_where_max_min_variadic():
    cond = RNG.random((3, 4)) > 0.5
    check([node("Where", ["c", "x", "z"])], {"x": r(2, 3, 4), "z": r(4)}, {"c": cond})
    check([node("Max", ["x", "z", "w"])], {"x": r(2, 3, 4), "z": r(3, 4), "w": r(4)})
    check([node("Min", ["x", "z"])], {"x": r(2, 3, 4), "z": r(2, 1, 4)})


def test_sum_mean_cumsum():
    check([node("Sum", ["x", "z", "w"])], {"x": r(2, 3, 4), "z": r(3, 4), "w": r(1)})
    check([node("Mean", ["x", "z"])], {"x": r(2, 3, 4), "z": r(3, 1)})
    check([node("CumSum", ["x", "ax"], exclusive=1, reverse=0)], {"x": r(3, 5)}, {"ax": np.array(1)})


def test_dropout_inference_and_cast():
    check([node("Dropout", ["x", "ratio"], ["d"]), node("Tanh", ["d"])], {"x": r(3, 4)}, {"ratio": np.array(0.5)})
    nodes = [node("Cast", ["x"], ["c"], to=onnx.TensorProto.DOUBLE), node("Sin", ["c"])]
    check(nodes, {"x": r(3, 4).astype(np.float32)}, dtype=None, tol=1e-2)


# ---- the Softmax family -------------------------------------------------------------------


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis,opset", [(-1, 13), (1, 13), (1, 11), (0, 17)])
def test_softmax(op, axis, opset):
    check([node(op, ["x"], axis=axis)], {"x": r(2, 3, 4)}, opset=opset)
