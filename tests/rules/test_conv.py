"""Conv / ConvTranspose rule: plain, bias, depthwise (with multiplier), grouped (tied
classes), transposed, Constant-node weights, graph-input channels."""

import numpy as np

from tests.rules.graphs import (G, attr, blocked_by, group_of, keep_first, members, oracle_all, prune,
                                run_analysis, shape_of, value)


def _chain(bias=False):
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.op("Relu", [g.conv(x, 3, 8, "c1", k=3, bias=bias)])
    h = g.op("Relu", [g.conv(h, 8, 6, "c2", bias=bias)])
    g.output(g.conv(h, 6, 4, "c3"))
    return g.model()


def test_plain_chain_groups():
    m = _chain()
    a = run_analysis(m)
    g1, g2, g3 = group_of(a, "c1"), group_of(a, "c2"), group_of(a, "c3")
    assert (g1.size, g2.size, g3.size) == (8, 6, 4)
    assert g1.prunable and g2.prunable and g1.kind == "conv"
    assert not g3.prunable and blocked_by(g3, "graph output")
    # c1's channels: produced by c1 (out), read by c2 (in)
    assert {(m.tensor, m.axis, m.role) for m in g1.members} == {("c1_w", 0, "out"), ("c2_w", 1, "in")}
    assert g1.producers == ["c1"]
    assert oracle_all(a, m) == 2


def test_plain_chain_shapes_after_pruning():
    m = _chain()
    a = run_analysis(m)
    g1, g2 = group_of(a, "c1"), group_of(a, "c2")
    new = prune(a, {g1.id: [0, 2, 4, 6, 7], g2.id: [1, 3]})
    assert shape_of(new, "c1_w") == (5, 3, 3, 3)
    assert shape_of(new, "c2_w") == (2, 5, 1, 1)
    assert shape_of(new, "c3_w") == (4, 2, 1, 1)


def test_conv_bias_is_member():
    m = _chain(bias=True)
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert [(b.tensor, b.axis) for b in members(g1, role="bias")] == [("c1_b", 0)]
    assert oracle_all(a, m) == 2
    new = prune(a, {g1.id: [1, 2, 5]})
    assert shape_of(new, "c1_b") == (3,)
    assert shape_of(new, "c1_w") == (3, 3, 3, 3)
    assert shape_of(new, "c2_w") == (6, 3, 1, 1)
    assert shape_of(new, "c2_b") == (6,)


def _depthwise(mult=1, bias=False):
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.op("Relu", [g.conv(x, 3, 8, "c1")])
    h = g.op("Relu", [g.conv(h, 8, 8 * mult, "dw", k=3, group=8, bias=bias)])
    g.output(g.conv(h, 8 * mult, 4, "c3"))
    return g.model()


def test_depthwise_one_group_spans_both_pointwise_convs():
    m = _depthwise()
    a = run_analysis(m)
    g = group_of(a, "c1")
    assert g is group_of(a, "dw")
    assert g.prunable and g.size == 8 and len(g.roots) == 1
    assert g.kind.startswith("depthwise")
    roles = {(m.tensor, m.role) for m in g.members}
    assert roles == {("c1_w", "out"), ("dw_w", "dw"), ("c3_w", "in")}
    assert set(g.producers) == {"c1", "dw"}
    assert oracle_all(a, m) == 1


def test_depthwise_pruned_group_attribute():
    m = _depthwise(bias=True)
    a = run_analysis(m)
    g = group_of(a, "dw")
    assert members(g, "dw_b", "bias")
    oracle_all(a, m)
    new = prune(a, {g.id: [0, 3, 4, 7, 5]})
    assert shape_of(new, "dw_w") == (5, 1, 3, 3)
    assert shape_of(new, "dw_b") == (5,)
    assert attr(new, "dw", "group") == 5
    assert shape_of(new, "c1_w") == (5, 3, 1, 1)
    assert shape_of(new, "c3_w") == (4, 5, 1, 1)


def test_depthwise_channel_multiplier():
    m = _depthwise(mult=2, bias=True)
    a = run_analysis(m)
    g = group_of(a, "dw")
    assert g is group_of(a, "c1")
    assert g.prunable and g.size == 8
    (dw,) = members(g, "dw_w", "dw")
    assert dw.amap[0].inner == 2  # channel c owns outputs 2c, 2c+1
    (c3,) = members(g, "c3_w", "in")
    assert c3.amap[0].inner == 2
    assert oracle_all(a, m) == 1
    new = prune(a, {g.id: [0, 1, 5, 6, 7]})
    assert shape_of(new, "dw_w") == (10, 1, 3, 3)
    assert shape_of(new, "dw_b") == (10,)
    assert attr(new, "dw", "group") == 5
    assert shape_of(new, "c3_w") == (4, 10, 1, 1)
    # the kept output pairs are those of the kept channels, in order
    kept_rows = [2 * c + i for c in [0, 1, 5, 6, 7] for i in range(2)]
    np.testing.assert_array_equal(value(new, "dw_w"), value(m, "dw_w")[kept_rows])


def _grouped():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.op("Relu", [g.conv(x, 3, 8, "c1")])
    h = g.op("Relu", [g.conv(h, 8, 16, "gc", k=3, group=4, bias=True)])
    g.output(g.conv(h, 16, 4, "c3"))
    return g.model()


def test_grouped_conv_tied_classes():
    m = _grouped()
    a = run_analysis(m)
    assert a.passes >= 2  # c1's space is cut at the conv's group boundaries
    gin, gout = group_of(a, "c1"), group_of(a, "gc")
    assert gin is not gout
    assert gin.prunable and gout.prunable
    assert len(gin.roots) == 4 and gin.size == 2 and gin.channels == 8
    assert len(gout.roots) == 4 and gout.size == 4 and gout.channels == 16
    (grouped_in,) = members(gin, "gc_w", "in")
    assert grouped_in.groups is not None and len(grouped_in.groups) == 4
    assert oracle_all(a, m) == 2


def test_grouped_conv_shapes_after_pruning():
    m = _grouped()
    a = run_analysis(m)
    gin, gout = group_of(a, "c1"), group_of(a, "gc")
    new = prune(a, {gin.id: [[0], [1], [1], [0]], gout.id: keep_first(gout, 3)})
    assert shape_of(new, "c1_w") == (4, 3, 1, 1)
    assert shape_of(new, "gc_w") == (12, 1, 3, 3)
    assert shape_of(new, "gc_b") == (12,)
    assert attr(new, "gc", "group") == 4
    assert shape_of(new, "c3_w") == (4, 12, 1, 1)


def _conv_transpose(depthwise: bool):
    g = G()
    x = g.input("x", [1, 3, 6, 6])
    h = g.op("Relu", [g.conv(x, 3, 8, "c1")])
    if depthwise:
        w = g.weight([8, 1, 2, 2], "ct_w")
        b = g.weight([8], "ct_b")
        h = g.op("ConvTranspose", [h, w, b], "ct", kernel_shape=[2, 2], strides=[2, 2], group=8)
        cout = 8
    else:
        w = g.weight([8, 6, 2, 2], "ct_w")
        b = g.weight([6], "ct_b")
        h = g.op("ConvTranspose", [h, w, b], "ct", kernel_shape=[2, 2], strides=[2, 2])
        cout = 6
    g.output(g.conv(g.op("Relu", [h]), cout, 4, "c3"))
    return g.model()


def test_conv_transpose_plain():
    m = _conv_transpose(depthwise=False)
    a = run_analysis(m)
    gin, gout = group_of(a, "c1"), group_of(a, "ct")
    assert gin is not gout and gin.prunable and gout.prunable
    assert members(gin, "ct_w", "in")[0].axis == 0
    assert members(gout, "ct_w", "out")[0].axis == 1
    assert members(gout, "ct_b", "bias")
    assert gout.kind == "conv-transpose"
    assert oracle_all(a, m) == 2
    new = prune(a, {gin.id: [0, 1, 2, 3, 4], gout.id: [0, 2, 4, 5]})
    assert shape_of(new, "ct_w") == (5, 4, 2, 2)
    assert shape_of(new, "ct_b") == (4,)
    assert shape_of(new, "c3_w") == (4, 4, 1, 1)


def test_conv_transpose_depthwise():
    m = _conv_transpose(depthwise=True)
    a = run_analysis(m)
    g = group_of(a, "c1")
    assert g is group_of(a, "ct")
    assert g.prunable and members(g, "ct_w", "dw")
    assert oracle_all(a, m) == 1
    new = prune(a, {g.id: [1, 2, 3, 6]})
    assert shape_of(new, "ct_w") == (4, 1, 2, 2)
    assert shape_of(new, "ct_b") == (4,)
    assert attr(new, "ct", "group") == 4
    assert shape_of(new, "c3_w") == (4, 4, 1, 1)


def _grouped_conv_transpose():
    g = G()
    x = g.input("x", [1, 3, 6, 6])
    h = g.op("Relu", [g.conv(x, 3, 8, "c1")])
    w, b = g.weight([8, 3, 2, 2], "ct_w"), g.weight([12], "ct_b")  # 4 groups: 2 in -> 3 out each
    h = g.op("ConvTranspose", [h, w, b], "ct", kernel_shape=[2, 2], strides=[2, 2], group=4)
    g.output(g.conv(g.op("Relu", [h]), 12, 4, "c3"))
    return g.model()


def test_grouped_conv_transpose_tied_classes():
    m = _grouped_conv_transpose()
    a = run_analysis(m)
    gin, gout = group_of(a, "c1"), group_of(a, "ct")
    assert gin is not gout and gin.prunable and gout.prunable
    assert (len(gin.roots), gin.size) == (4, 2)
    assert (len(gout.roots), gout.size) == (4, 3)
    (out,) = members(gout, "ct_w", "out")
    assert out.axis == 1 and out.groups is not None and len(out.groups) == 4
    assert oracle_all(a, m) == 2
    new = prune(a, {gin.id: [[0], [1], [0], [1]], gout.id: [[0, 2], [1, 2], [0, 1], [0, 2]]})
    assert shape_of(new, "c1_w") == (4, 3, 1, 1)
    assert shape_of(new, "ct_w") == (4, 2, 2, 2)
    assert shape_of(new, "ct_b") == (8,)
    assert attr(new, "ct", "group") == 4
    assert shape_of(new, "c3_w") == (4, 8, 1, 1)
    # group 1 keeps input channel 1 of its pair (row 3) and outputs 1, 2 of its three
    np.testing.assert_array_equal(value(new, "ct_w")[1], value(m, "ct_w")[3][[1, 2]])


def test_conv_weight_from_constant_node():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    w1 = g.const_node((g.rng.standard_normal([8, 3, 3, 3]) * 0.5).astype(np.float32), "c1_w")
    h = g.op("Relu", [g.op("Conv", [x, w1], "c1", kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
    w2 = g.const_node((g.rng.standard_normal([4, 8, 1, 1]) * 0.5).astype(np.float32), "c2_w")
    g.output(g.op("Conv", [h, w2], "c2", kernel_shape=[1, 1]))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable and g1.size == 8
    assert {(m.tensor, m.role) for m in g1.members} == {("c1_w", "out"), ("c2_w", "in")}
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 1, 2]})
    assert shape_of(new, "c1_w") == (3, 3, 3, 3)
    assert shape_of(new, "c2_w") == (4, 3, 1, 1)
    assert not new.graph.initializer or all(t.name not in ("c1_w", "c2_w") for t in new.graph.initializer)


def test_conv_on_graph_input_keeps_input_channels():
    m = _chain()
    a = run_analysis(m)
    # the input channels of c1 belong to no group: nothing slices c1_w's axis 1
    assert not any(m.tensor == "c1_w" and m.axis == 1 for g in a.groups for m in g.members)
    g1 = group_of(a, "c1")
    new = prune(a, {g1.id: [0, 1]})
    assert shape_of(new, "c1_w") == (2, 3, 3, 3)


def test_depthwise_on_graph_input_creates_no_group():
    g = G()
    x = g.input("x", [1, 4, 8, 8])
    h = g.conv(x, 4, 4, "dw", k=3, group=4)
    g.output(g.conv(h, 4, 2, "c2"))
    m = g.model()
    a = run_analysis(m)
    assert not any(m.node == "dw" for g in a.groups for m in g.members)
    assert not any(m.tensor == "c2_w" and m.axis == 1 for g in a.groups for m in g.members)
