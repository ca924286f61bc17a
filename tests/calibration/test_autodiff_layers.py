"""Backward rules against finite differences: conv, linear, normalization, pooling, resize."""

from __future__ import annotations

import numpy as np
import pytest

from .test_autodiff import fresh_rng  # noqa: F401  (autouse: same inputs in any order)
from .test_autodiff import away, check, distinct, node, pos, r

# ---- Conv / ConvTranspose (float-only kernels in ORT CPU: float32 checks) ------------------

CONV_CASES = {
    "3x3_s1_p1": dict(x=(2, 3, 6, 6), w=(4, 3, 3, 3), pads=[1, 1, 1, 1]),
    "3x3_s2_p1": dict(x=(2, 3, 7, 7), w=(4, 3, 3, 3), pads=[1, 1, 1, 1], strides=[2, 2]),
    "3x3_s2_p1_even": dict(x=(1, 3, 8, 8), w=(4, 3, 3, 3), pads=[1, 1, 1, 1], strides=[2, 2]),
    "dilated": dict(x=(1, 2, 9, 9), w=(3, 2, 3, 3), pads=[2, 2, 2, 2], dilations=[2, 2]),
    "dilated_s2": dict(x=(1, 2, 9, 8), w=(3, 2, 3, 3), pads=[1, 2, 1, 0], dilations=[2, 1], strides=[2, 3]),
    "asym_pads": dict(x=(1, 2, 6, 7), w=(3, 2, 3, 2), pads=[0, 1, 2, 0]),
    "groups": dict(x=(2, 4, 5, 5), w=(6, 2, 3, 3), pads=[1, 1, 1, 1], group=2),
    "groups_s2": dict(x=(1, 4, 6, 6), w=(6, 2, 3, 3), pads=[1, 1, 1, 1], group=2, strides=[2, 2]),
    "depthwise_s1": dict(x=(2, 4, 6, 6), w=(4, 1, 3, 3), pads=[1, 1, 1, 1], group=4),
    "depthwise_s2": dict(x=(2, 4, 7, 7), w=(4, 1, 3, 3), pads=[1, 1, 1, 1], group=4, strides=[2, 2]),
    "depthwise_mult2": dict(x=(1, 3, 5, 5), w=(6, 1, 3, 3), pads=[1, 1, 1, 1], group=3),
    "depthwise_5x5_s2": dict(x=(1, 3, 9, 9), w=(3, 1, 5, 5), pads=[2, 2, 2, 2], group=3, strides=[2, 2]),
    "1x1": dict(x=(2, 5, 4, 4), w=(3, 5, 1, 1)),
    "1x1_s2": dict(x=(2, 5, 5, 5), w=(3, 5, 1, 1), strides=[2, 2]),
    "pads_beyond_kernel": dict(x=(1, 2, 4, 4), w=(3, 2, 1, 1), pads=[1, 1, 1, 1]),
    "same_upper_s2": dict(x=(1, 2, 7, 6), w=(3, 2, 3, 3), auto_pad="SAME_UPPER", strides=[2, 2]),
    "same_lower": dict(x=(1, 2, 6, 6), w=(3, 2, 4, 4), auto_pad="SAME_LOWER"),
    "valid": dict(x=(1, 2, 6, 6), w=(3, 2, 3, 3), auto_pad="VALID"),
    "conv1d": dict(x=(2, 3, 9), w=(4, 3, 3), pads=[1, 1], strides=[2]),
    "conv3d": dict(x=(1, 2, 4, 4, 4), w=(2, 2, 3, 3, 3), pads=[1, 1, 1, 1, 1, 1]),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv(case):
    c = dict(CONV_CASES[case])
    xs, ws = c.pop("x"), c.pop("w")
    dt, _ = check([node("Conv", ["x", "w", "bias"], **c)], {"x": r(*xs)}, {"w": r(*ws), "bias": r(ws[0])})
    assert dt is np.float32


@pytest.mark.parametrize("kw", [
    dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    dict(strides=[2, 2], group=2),
    dict(strides=[1, 1], pads=[1, 0, 1, 0], dilations=[2, 1]),
])
def test_conv_transpose(kw):
    check([node("ConvTranspose", ["x", "w"], **kw)], {"x": r(2, 4, 4, 5)}, {"w": r(4, 3 if kw.get("group") is None else 2, 3, 3)})


def test_conv_chain_input_through_two_convs():
    nodes = [node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], group=3), node("Relu", ["a"], ["b"]),
             node("Conv", ["b", "w2"], ["y"], strides=[2, 2])]
    check(nodes, {"x": away(1, 3, 6, 6)}, {"w1": r(3, 1, 3, 3), "w2": r(2, 3, 1, 1)})


# ---- Gemm / MatMul / Einsum -----------------------------------------------------------------


@pytest.mark.parametrize("ta", [0, 1])
@pytest.mark.parametrize("tb", [0, 1])
def test_gemm_both_activations(ta, tb):
    a = r(4, 3) if ta else r(3, 4)
    b = r(5, 4) if tb else r(4, 5)
    dt, _ = check([node("Gemm", ["a", "b", "c"], transA=ta, transB=tb, alpha=0.7, beta=1.5)],
                  {"a": a, "b": b, "c": r(5)})
    assert dt is np.float64


def test_gemm_constant_weight():
    check([node("Gemm", ["a", "w", "c"], transB=1)], {"a": r(3, 4)}, {"w": r(6, 4), "c": r(6)})
    check([node("Gemm", ["a", "w"], alpha=2.0)], {"a": r(3, 4)}, {"w": r(4, 6)})


@pytest.mark.parametrize("sa,sb", [
    ((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((3, 4), (2, 4, 5)), ((1, 3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (3, 4, 2)), ((4,), (2, 4, 5)), ((2, 3, 4), (4,)), ((4,), (4,)),
])
def test_matmul(sa, sb):
    dt, _ = check([node("MatMul", ["a", "b"])], {"a": r(*sa), "b": r(*sb)})
    assert dt is np.float64


def test_matmul_constant_weight_tokens():
    check([node("MatMul", ["x", "w"], ["m"]), node("Add", ["m", "bias"])], {"x": r(2, 5, 4)}, {"w": r(4, 3), "bias": r(3)})


@pytest.mark.parametrize("eq,sa,sb", [("bij,bjk->bik", (2, 3, 4), (2, 4, 5)), ("ij,kj->ik", (3, 4), (5, 4)),
                                      ("bhqd,bhkd->bhqk", (1, 2, 3, 4), (1, 2, 5, 4))])
def test_einsum(eq, sa, sb):
    check([node("Einsum", ["a", "b"], equation=eq)], {"a": r(*sa), "b": r(*sb)}, opset=12)


# ---- normalization ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 4), (4, 3)])
def test_batch_norm(shape):
    c = shape[1]
    dt, _ = check([node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)], {"x": r(*shape)},
                  {"s": r(c), "b": r(c), "m": r(c), "v": pos(c)})
    assert dt is np.float64


def test_batch_norm_opset11():
    check([node("BatchNormalization", ["x", "s", "b", "m", "v"])], {"x": r(2, 3, 4)},
          {"s": r(3), "b": r(3), "m": r(3), "v": pos(3)}, opset=11)


def test_instance_norm():
    check([node("InstanceNormalization", ["x", "s", "b"], epsilon=1e-4)], {"x": r(2, 3, 4, 5)}, {"s": r(3), "b": r(3)})


@pytest.mark.parametrize("axis,scale", [(-1, (5,)), (1, (3, 4, 5)), (2, (1, 5))])
def test_layer_norm(axis, scale):
    check([node("LayerNormalization", ["x", "s", "b"], axis=axis, epsilon=1e-4)], {"x": r(2, 3, 4, 5)},
          {"s": r(*scale), "b": r(*scale)})


# ---- pooling --------------------------------------------------------------------------------


def test_global_pools():
    check([node("GlobalAveragePool", ["x"])], {"x": r(2, 3, 4, 5)})
    check([node("GlobalMaxPool", ["x"])], {"x": distinct(2, 3, 4, 5)})


@pytest.mark.parametrize("kw,opset", [
    (dict(kernel_shape=[2, 2], strides=[2, 2]), 11),
    (dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), 17),
    (dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), 11),
    (dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), 13),
    (dict(kernel_shape=[3, 2], strides=[2, 1], ceil_mode=1), 17),
    (dict(kernel_shape=[2, 2], dilations=[2, 2]), 12),
    (dict(kernel_shape=[3], strides=[2]), 17),
])
def test_max_pool(kw, opset):
    shape = (2, 3, 7, 6) if len(kw["kernel_shape"]) == 2 else (2, 3, 9)
    dt, res = check([node("MaxPool", ["x"], **kw)], {"x": distinct(*shape)}, opset=opset)
    assert dt is np.float64
    assert res.opset == opset


@pytest.mark.parametrize("kw", [
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    dict(kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[3], strides=[2], pads=[1, 0]),
])
def test_average_pool(kw):
    shape = (2, 3, 7, 6) if len(kw["kernel_shape"]) == 2 else (2, 3, 8)
    check([node("AveragePool", ["x"], **kw)], {"x": r(*shape)})


# ---- Resize (nearest) -----------------------------------------------------------------------


@pytest.mark.parametrize("mode,nearest,scales,sizes", [
    ("asymmetric", "floor", [1, 1, 2, 2], None),  # torch nn.Upsample(mode='nearest')
    ("half_pixel", "round_prefer_floor", [1, 1, 3, 2], None),
    ("asymmetric", "round_prefer_floor", [1, 1, 3, 3], None),  # not a block map: one-hot MatMul
    ("half_pixel", "round_prefer_ceil", None, [2, 3, 5, 7]),
    ("align_corners", "round_prefer_floor", None, [2, 3, 3, 2]),
])
def test_resize_nearest(mode, nearest, scales, sizes):
    inits = {"roi": np.zeros(0, np.float32), "scales": np.array(scales or [], np.float32)}
    inputs = ["x", "roi", "scales"]
    if sizes is not None:
        inits["sizes"] = np.array(sizes, np.int64)
        inputs = ["x", "", "", "sizes"]
    check([node("Resize", inputs, mode="nearest", coordinate_transformation_mode=mode, nearest_mode=nearest)],
          {"x": r(2, 3, 3, 4)}, inits)
