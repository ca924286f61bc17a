"""Shape-moving rules: Flatten, Reshape (constant and computed targets), Transpose,
Squeeze/Unsqueeze, Pad, Resize, Gather, Tile, Expand."""

import numpy as np
import pytest

from tests.rules.graphs import (G, blocked_by, group_of, input_value, members, oracle_all, prune, run, run_analysis,
                                shape_of, value)


def _conv_in(g, batch=1, spatial=4):
    x = g.input("x", [batch, 3, spatial, spatial])
    return g.op("Relu", [g.conv(x, 3, 8, "c1", k=3)])


def test_flatten_after_conv_into_gemm():
    g = G()
    h = g.op("Flatten", [_conv_in(g)], "flat", axis=1)  # (1, 128): channel c -> features 16c..16c+15
    g.output(g.op("Gemm", [h, g.weight([128, 5], "fc_w")], "fc"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    (fc,) = members(g1, "fc_w", "in")
    assert fc.axis == 0 and fc.amap[0].inner == 16 and fc.amap[0].outer == 1
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 2, 4, 6, 7]})
    assert shape_of(new, "fc_w") == (80, 5)
    rows = np.concatenate([np.arange(16 * c, 16 * c + 16) for c in [0, 2, 4, 6, 7]])
    np.testing.assert_array_equal(value(new, "fc_w"), value(m, "fc_w")[rows])


def test_channels_last_flatten_into_gemm():
    g = G()
    h = g.op("Transpose", [_conv_in(g)], "nhwc", perm=[0, 2, 3, 1])  # (1, 4, 4, 8)
    h = g.op("Flatten", [h], "flat", axis=1)  # (1, 128): channel c at 8p + c
    g.output(g.op("Gemm", [h, g.weight([5, 128], "fc_w")], "fc", transB=1))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    (fc,) = members(g1, "fc_w", "in")
    assert fc.axis == 1 and fc.amap[0].outer == 16 and fc.amap[0].inner == 1
    assert oracle_all(a, m) == 1
    keep = [1, 2, 3, 5, 6]
    new = prune(a, {g1.id: keep})
    assert shape_of(new, "fc_w") == (5, 80)
    cols = np.concatenate([8 * p + np.array(keep) for p in range(16)])
    np.testing.assert_array_equal(value(new, "fc_w"), value(m, "fc_w")[:, cols])


def test_channels_last_per_channel_constant():
    g = G()
    h = g.op("Transpose", [_conv_in(g)], "nhwc", perm=[0, 2, 3, 1])
    h = g.op("Mul", [h, g.weight([8], "k")], "mul")  # broadcasts onto the last axis
    h = g.op("Transpose", [h], "nchw", perm=[0, 3, 1, 2])
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable and members(g1, "k", "const")
    assert oracle_all(a, m) == 1
    assert shape_of(prune(a, {g1.id: [0, 1, 2]}), "k") == (3,)


def test_transpose_round_trip():
    g = G()
    h = g.op("Transpose", [_conv_in(g)], "t1", perm=[0, 2, 3, 1])
    h = g.op("Transpose", [g.op("Sigmoid", [h])], "t2", perm=[0, 3, 1, 2])
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert oracle_all(a, m) == 1
    assert shape_of(prune(a, {g1.id: [4, 5]}), "c2_w") == (4, 2, 1, 1)


@pytest.mark.parametrize("target", [[2, -1], [-1, 128], [0, 128], [2, 128], [0, -1]])
def test_reshape_constant_target(target):
    g = G()
    h = _conv_in(g, batch=2)
    h = g.op("Reshape", [h, g.ints(target, "shape")], "rs")
    g.output(g.op("Gemm", [h, g.weight([128, 5], "fc_w")], "fc"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert members(g1, "fc_w", "in")[0].amap[0].inner == 16
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 1, 2, 3, 4]})
    expect = [80 if t == 128 else t for t in target]  # a literal channel entry is rewritten
    np.testing.assert_array_equal(input_value(new, "rs", 1), expect)
    assert shape_of(new, "fc_w") == (80, 5)
    assert run(new)[0].shape == (2, 5)


@pytest.mark.parametrize("last", [-1, 128])
def test_reshape_target_from_shape_chain(last):
    """``x.view(x.size(0), -1)`` as exported: Shape→Gather→Unsqueeze→Concat."""
    g = G()
    x = g.input("x", ["N", 3, 4, 4])
    h = g.op("Relu", [g.conv(x, 3, 8, "c1", k=3)])
    n = g.op("Gather", [g.op("Shape", [h], "shp"), g.ints(0, "zero")], "gat", axis=0)
    n = g.op("Unsqueeze", [n, g.ints([0], "ax0")], "unsq")
    target = g.op("Concat", [n, g.ints([last], "last")], "cat", axis=0)
    h = g.op("Reshape", [h, target], "rs")
    g.output(g.op("Gemm", [h, g.weight([128, 5], "fc_w")], "fc"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable, g1.blocked
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [1, 3, 5]})
    assert shape_of(new, "fc_w") == (48, 5)
    assert value(new, "last").tolist() == [-1 if last == -1 else 48]
    assert run(new, {"x": np.ones((3, 3, 4, 4), np.float32)})[0].shape == (3, 5)


def test_reshape_splitting_channel_axis_blocks():
    g = G()
    h = g.op("Reshape", [_conv_in(g), g.ints([1, 2, 4, 4, 4], "shape")], "rs")  # C=8 -> 2 x 4
    h = g.op("Reshape", [h, g.ints([1, 8, 4, 4], "shape2")], "rs2")
    g.output(g.conv(h, 8, 4, "c2"))
    a = run_analysis(g.model())
    g1 = group_of(a, "c1")
    assert not g1.prunable and blocked_by(g1, "Reshape 'rs'", "splits a channel axis")


def test_reshape_merging_channel_with_dynamic_axis_blocks():
    g = G()
    x = g.input("x", [1, 3, "H", 4])
    h = g.op("Relu", [g.conv(x, 3, 8, "c1", k=3)])
    h = g.op("Reshape", [h, g.ints([1, -1, 4], "shape")], "rs")  # merges C with dynamic H
    g.output(h)
    a = run_analysis(g.model())
    assert not group_of(a, "c1").prunable


@pytest.mark.parametrize("opset", [11, 17])
def test_squeeze_unsqueeze_around_global_pool(opset):
    g = G(opset=opset)
    h = g.op("GlobalAveragePool", [_conv_in(g, batch=2)], "gap")  # (2, 8, 1, 1)
    if opset >= 13:
        h = g.op("Squeeze", [h, g.ints([2, 3], "sq_axes")], "sq")
    else:
        h = g.op("Squeeze", [h], "sq", axes=[2, 3])
    h = g.op("Relu", [g.op("Gemm", [h, g.weight([8, 6], "fc_w")], "fc")])  # (2, 6)
    if opset >= 13:
        h = g.op("Unsqueeze", [h, g.ints([-1, 2], "usq_axes")], "usq")
    else:
        h = g.op("Unsqueeze", [h], "usq", axes=[2, 3])
    g.output(g.conv(h, 6, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1, g2 = group_of(a, "c1"), group_of(a, "fc")
    assert g1.prunable and g2.prunable
    assert members(g2, "c2_w", "in")
    assert oracle_all(a, m) == 2
    new = prune(a, {g1.id: [0, 1, 2], g2.id: [0, 5]})
    assert shape_of(new, "fc_w") == (3, 2)
    assert shape_of(new, "c2_w") == (4, 2, 1, 1)


def test_squeeze_without_axes():
    g = G()
    h = g.op("GlobalAveragePool", [_conv_in(g)], "gap")  # (1, 8, 1, 1)
    h = g.op("Squeeze", [h], "sq")  # -> (8,)
    h = g.op("Unsqueeze", [h, g.ints([0], "ax")], "usq")  # (1, 8)
    g.output(g.op("Gemm", [h, g.weight([8, 4], "fc_w")], "fc"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert oracle_all(a, m) == 1


@pytest.mark.parametrize("opset", [11, 18])
def test_pad_zero_channel_pads_pass(opset):
    g = G(opset=opset)
    h = _conv_in(g)
    if opset >= 18:  # pads for the listed axes only
        h = g.op("Pad", [h, g.ints([1, 2, 1, 2], "pads"), g.init(np.float32(0.5), "cv"), g.ints([2, 3], "axes")],
                 "pad")
    else:
        h = g.op("Pad", [h, g.ints([0, 0, 1, 2, 0, 0, 1, 2], "pads"), g.init(np.float32(0.5), "cv")], "pad")
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 1]})
    assert run(new)[0].shape == (1, 4, 6, 8)


def test_pad_channel_axis_blocks():
    g = G()
    h = g.op("Pad", [_conv_in(g), g.ints([0, 1, 0, 0, 0, 1, 0, 0], "pads")], "pad")
    g.output(g.conv(h, 10, 4, "c2"))
    a = run_analysis(g.model())
    g1 = group_of(a, "c1")
    assert not g1.prunable and blocked_by(g1, "Pad 'pad'", "pads a channel axis")


def test_resize_with_scales():
    g = G()
    h = g.op("Resize", [_conv_in(g), "", g.init(np.array([1, 1, 2, 2], np.float32), "scales")], "rsz",
             mode="nearest")
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 7]})
    assert value(new, "scales").tolist() == [1, 1, 2, 2]
    assert run(new)[0].shape == (1, 4, 8, 8)


def test_resize_with_sizes_is_rewritten():
    g = G()
    h = g.op("Resize", [_conv_in(g), "", "", g.ints([1, 8, 8, 8], "sizes")], "rsz", mode="linear")
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 3, 7]})
    assert input_value(new, "rsz", 3).tolist() == [1, 3, 8, 8]


def test_resize_of_channel_axis_blocks():
    g = G()
    h = g.op("Resize", [_conv_in(g), "", g.init(np.array([1, 2, 1, 1], np.float32), "scales")], "rsz")
    g.output(g.conv(h, 16, 4, "c2"))
    a = run_analysis(g.model())
    assert blocked_by(group_of(a, "c1"), "Resize 'rsz'")


def test_gather_on_spatial_axis_passes_and_on_channel_axis_blocks():
    g = G()
    h = _conv_in(g)
    h = g.op("Gather", [h, g.ints([0, 2], "idx")], "gat", axis=2)  # (1, 8, 2, 4)
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    assert group_of(a, "c1").prunable
    assert oracle_all(a, m) == 1

    g = G()
    h = g.op("Gather", [_conv_in(g), g.ints([0, 2, 3], "idx")], "gat", axis=1)
    g.output(g.conv(h, 3, 4, "c2"))
    a = run_analysis(g.model())
    assert blocked_by(group_of(a, "c1"), "Gather 'gat'", "gathers along a channel axis")


def test_tile_and_expand():
    g = G()
    h = _conv_in(g)
    h = g.op("Tile", [h, g.ints([2, 1, 1, 1], "reps")], "tile")  # (2, 8, 4, 4)
    h = g.op("Expand", [h, g.ints([1, 1, 4], "eshape")], "exp")  # broadcast: no change
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert oracle_all(a, m) == 1

    g = G()
    h = g.op("Tile", [_conv_in(g), g.ints([1, 2, 1, 1], "reps")], "tile")
    g.output(g.conv(h, 16, 4, "c2"))
    a = run_analysis(g.model())
    assert blocked_by(group_of(a, "c1"), "Tile 'tile'")


def test_reshape_merging_dynamic_leading_axes_keeps_trailing_channels():
    """timm LeViT's LinearNorm: tokens (B, N, C) -> Flatten (B*N, C) -> BatchNorm ->
    Reshape back to Shape(tokens); the channel axis stays last throughout."""
    g = G()
    x = g.input("x", ["B", "N", 6])
    t = g.op("MatMul", [x, g.weight([6, 8], "w1")], "mm1")
    f = g.op("Flatten", [t], "flat", axis=2)
    c = 8
    bn = g.op("BatchNormalization", [f, g.init(np.linspace(0.5, 1.5, c).astype(np.float32), "s"),
                                     g.init(np.zeros(c, np.float32), "b"), g.init(np.zeros(c, np.float32), "mu"),
                                     g.init(np.ones(c, np.float32), "var")], "bn")
    back = g.op("Reshape", [bn, g.op("Shape", [t], "shp")], "rs")
    g.output(g.op("MatMul", [back, g.weight([8, 5], "w2")], "mm2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "mm1")
    assert g1.prunable, g1.blocked
    assert oracle_all(a, m) == 1
    assert shape_of(prune(a, {g1.id: [0, 2, 4]}), "w2") == (3, 5)


def test_reshape_of_dynamic_rows_with_literal_channels_is_rewritten():
    """HF GPT-2 Conv1D: view(-1, C) -> Gemm -> view(B, S, C') with C' a literal in a
    Concat(Shape[0], Shape[1], const) target."""
    g = G()
    x = g.input("x", ["B", "S", 6])
    flat = g.op("Reshape", [x, g.ints([-1, 6], "to2d")], "rs1")
    y = g.op("Gemm", [flat, g.weight([6, 8], "w1"), g.weight([8], "b1")], "fc1")
    shp = g.op("Shape", [x], "shp")
    b = g.op("Unsqueeze", [g.op("Gather", [shp, g.ints(0, "i0")], "g0", axis=0), g.ints([0], "a0")], "u0")
    s = g.op("Unsqueeze", [g.op("Gather", [shp, g.ints(1, "i1")], "g1", axis=0), g.ints([0], "a1")], "u1")
    target = g.op("Concat", [b, s, g.ints([8], "c8")], "cat", axis=0)
    h = g.op("Relu", [g.op("Reshape", [y, target], "rs2")])
    g.output(g.op("MatMul", [h, g.weight([8, 5], "w2")], "mm2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "fc1")
    assert g1.prunable, g1.blocked
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [1, 2, 3, 7]})
    assert input_value(new, "cat", 2).tolist() == [4] or value(new, "c8").tolist() == [4]
    assert shape_of(new, "w2") == (4, 5)


def test_reshape_minus_one_absorbs_the_symbolic_batch():
    """x.view(-1, C*H*W) with a dynamic batch: the -1 can only be the batch."""
    g = G()
    h = _conv_in(g, batch="N")
    h = g.op("Reshape", [h, g.ints([-1, 128], "shape")], "rs")
    g.output(g.op("Gemm", [h, g.weight([128, 5], "fc_w")], "fc"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable, g1.blocked
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 1, 2, 3]})
    np.testing.assert_array_equal(input_value(new, "rs", 1), [-1, 64])
    assert shape_of(new, "fc_w") == (64, 5)


def test_resize_to_sizes_read_from_the_tensor_itself():
    """F.interpolate(x, size=(H2, W2)) exports sizes = Concat(Shape(x)[:2], const): the
    channel entry is the tensor's own channel count, right after pruning too."""
    g = G()
    h = _conv_in(g, batch="N")
    head = g.op("Slice", [g.op("Shape", [h], "shp"), g.ints([0], "s0"), g.ints([2], "e0")], "sl")
    sizes = g.op("Concat", [head, g.ints([8, 8], "hw")], "cat", axis=0)
    up = g.op("Resize", [h, "", "", sizes], "rz", mode="nearest")
    g.output(g.conv(up, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable, g1.blocked
    assert oracle_all(a, m) == 1
    assert shape_of(prune(a, {g1.id: [0, 2, 4]}), "c2_w") == (4, 3, 1, 1)
