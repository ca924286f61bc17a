"""Backward rules against finite differences: reductions, layout, concat/split, slice,
gather, pad."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.calibration.autodiff import fdcheck

from .test_autodiff import fresh_rng  # noqa: F401  (autouse: same inputs in any order)
from .test_autodiff import build, check, node, r

I64 = np.int64


# ---- reductions -------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL2",
                                "ReduceLogSumExp"])
@pytest.mark.parametrize("axes,keep", [([1], 1), ([-1, 0], 0), (None, 0)])
def test_reduce_opset18_axes_input(op, axes, keep):
    inputs = ["x"] if axes is None else ["x", "axes"]
    inits = {} if axes is None else {"axes": np.array(axes, I64)}
    check([node(op, inputs, keepdims=keep)], {"x": r(2, 3, 4)}, inits, opset=18)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
def test_reduce_axes_attribute(op):
    check([node(op, ["x"], axes=[-1], keepdims=0)], {"x": r(2, 3, 4)}, opset=13)
    check([node(op, ["x"], axes=[1, 2], keepdims=1)], {"x": r(2, 3, 4)}, opset=11)


def test_reduce_sum_opset13_axes_input_and_noop():
    check([node("ReduceSum", ["x", "axes"], keepdims=0)], {"x": r(2, 3, 4)}, {"axes": np.array([0, 2], I64)}, opset=13)
    check([node("ReduceSum", ["x"], noop_with_empty_axes=1), node("Tanh", ["y"], ["t"])], {"x": r(2, 3)},
          outputs=["t"], opset=13)


def test_reduce_max_ties_split_evenly():
    x = np.array([[1.0, 3.0, 3.0, 0.5]])
    model, feeds = build([node("ReduceMax", ["x"], axes=[1], keepdims=0)], {"x": x}, {}, ["y"], 13, np.float64)
    _, grads = fdcheck.gradients(model, ["x"], feeds, {"y": np.array([2.0])})
    np.testing.assert_allclose(grads["x"], [[0, 1, 1, 0]])


# ---- layout -------------------------------------------------------------------------------------


def test_reshape_flatten_transpose():
    check([node("Reshape", ["x", "s"], ["a"]), node("Transpose", ["a"], ["b"], perm=[2, 0, 1]),
           node("Flatten", ["b"], ["c"], axis=2), node("Sin", ["c"])], {"x": r(2, 3, 4)}, {"s": np.array([4, -1, 2], I64)})
    check([node("Transpose", ["x"])], {"x": r(2, 3, 4)})


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset):
    if opset < 13:
        nodes = [node("Unsqueeze", ["x"], ["a"], axes=[0, -1]), node("Squeeze", ["a"], ["y"], axes=[0])]
        inits = {}
    else:
        nodes = [node("Unsqueeze", ["x", "ax"], ["a"]), node("Squeeze", ["a", "ax0"], ["y"])]
        inits = {"ax": np.array([0, -1], I64), "ax0": np.array([0], I64)}
    check(nodes, {"x": r(3, 4)}, inits, opset=opset)


def test_expand_and_tile():
    check([node("Expand", ["x", "s"])], {"x": r(3, 1)}, {"s": np.array([2, 3, 4], I64)})
    check([node("Tile", ["x", "reps"])], {"x": r(2, 3)}, {"reps": np.array([3, 2], I64)})


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_and_back(mode):
    check([node("DepthToSpace", ["x"], blocksize=2, mode=mode)], {"x": r(1, 8, 2, 3)})
    check([node("SpaceToDepth", ["x"], blocksize=2)], {"x": r(1, 2, 4, 6)})


# ---- concat / split ---------------------------------------------------------------------------


def test_concat():
    check([node("Concat", ["a", "c", "b"], axis=-1)], {"a": r(2, 3, 2), "b": r(2, 3, 4)}, {"c": r(2, 3, 1)})
    check([node("Concat", ["a", "b"], ["y"], axis=1)], {"a": r(2, 3, 2)}, {"b": r(2, 1, 2)}, wrt=["a"])


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_split(opset):
    if opset >= 18:
        sp = node("Split", ["x"], ["p", "q", "s"], axis=1, num_outputs=3)
    elif opset >= 13:
        sp = node("Split", ["x", "sizes"], ["p", "q", "s"], axis=1)
    else:
        sp = node("Split", ["x"], ["p", "q", "s"], axis=1, split=[1, 3, 2])
    shape = (2, 6, 3) if opset >= 18 else (2, 6, 3)
    inits = {"sizes": np.array([1, 3, 2], I64)} if opset == 13 else {}
    # 's' is unused: its gradient is zero
    check([sp, node("Mul", ["p", "p"], ["y0"]), node("Tanh", ["q"], ["y1"])], {"x": r(*shape)}, inits,
          outputs=["y0", "y1"], opset=opset)


# ---- slice / gather / pad ----------------------------------------------------------------------


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1], [3], [1], None),
    ([0, -3], [2, 100], [0, 2], [1, 1]),
    ([1], [6], [-1], [2]),
    ([5], [0], [2], [-1]),
    ([-1, 0], [-100, 3], [2, 1], [-2, 3]),
])
def test_slice(starts, ends, axes, steps):
    inits = {"st": np.array(starts, I64), "en": np.array(ends, I64), "ax": np.array(axes, I64)}
    inputs = ["x", "st", "en", "ax"]
    if steps is not None:
        inits["sp"] = np.array(steps, I64)
        inputs.append("sp")
    check([node("Slice", inputs)], {"x": r(3, 4, 6)}, inits)


def test_slice_bounds_from_shape_arithmetic():
    """x[:, :C//2] with C read from Shape (a torch chunk export)."""
    nodes = [node("Shape", ["x"], ["sh"]), node("Gather", ["sh", "one"], ["c"], axis=0),
             node("Div", ["c", "two"], ["half"]), node("Unsqueeze", ["half", "zero1"], ["end"]),
             node("Slice", ["x", "zero1", "end", "one1"], ["y"])]
    inits = {"one": np.array(1, I64), "two": np.array(2, I64), "zero1": np.array([0], I64), "one1": np.array([1], I64)}
    check(nodes, {"x": r(2, 6, 3)}, inits)


@pytest.mark.parametrize("idx,axis", [
    (np.array(1, I64), 1), (np.array([1, 2], I64), 1), (np.array([[2, 0], [-1, 0]], I64), 2),
    (np.array([3, 1, 3, 3], I64), 0),
])
@pytest.mark.parametrize("opset", [13, 17])
def test_gather_constant_indices(idx, axis, opset):
    dt, res = check([node("Gather", ["x", "i"], axis=axis)], {"x": r(4, 3, 5)}, {"i": idx}, opset=opset)
    assert res.opset == opset


def test_gather_runtime_indices():
    nodes = [node("ArgMax", ["z"], ["i"], axis=1, keepdims=0), node("Gather", ["x", "i"], axis=0)]
    dt, res = check(nodes, {"x": r(4, 3), "z": r(5, 4)}, wrt=["x"], opset=16)
    assert res.opset == 16


def test_gather_elements():
    idx = np.array([[0, 2, 2], [1, 1, 0]], I64)
    check([node("GatherElements", ["x", "i"], axis=1)], {"x": r(2, 3)}, {"i": idx}, opset=13)
    check([node("GatherElements", ["x", "i"], axis=1)], {"x": r(2, 3)}, {"i": idx}, opset=16)


@pytest.mark.parametrize("pads", [[0, 1, 2, 0, 2, 1], [0, -1, 1, 0, 1, -2]])
def test_pad_constant(pads):
    check([node("Pad", ["x", "p", "v"], mode="constant")], {"x": r(2, 3, 4)},
          {"p": np.array(pads, I64), "v": np.array(0.5)})


def test_pad_axes_opset18():
    check([node("Pad", ["x", "p", "", "ax"])], {"x": r(2, 3, 4)}, {"p": np.array([1, 2, 0, 1], I64),
                                                                 "ax": np.array([-1, 1], I64)}, opset=18)
