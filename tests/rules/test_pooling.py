"""Pooling, reductions and Softmax-family rules: ops within a channel pass it; ops that
mix values along a channel axis block it."""

import pytest

from tests.rules.graphs import G, blocked_by, group_of, oracle_all, prune, run, run_analysis, shape_of


@pytest.mark.parametrize("pool", ["GlobalAveragePool", "GlobalMaxPool", "MaxPool", "AveragePool"])
def test_pools_pass_channels(pool):
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.op("Relu", [g.conv(x, 3, 8, "c1", k=3)])
    attrs = {} if pool.startswith("Global") else {"kernel_shape": [2, 2], "strides": [2, 2]}
    h = g.op(pool, [h], "pool", **attrs)
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable and g1.size == 8
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 1, 6]})
    assert shape_of(new, "c2_w") == (4, 3, 1, 1)


def test_maxpool_indices_output_blocks():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.conv(x, 3, 8, "c1", k=3)
    y, idx = g.op("MaxPool", [h], "pool", n_out=2, kernel_shape=[2, 2], strides=[2, 2])
    g.output(g.conv(y, 8, 4, "c2"))
    g.output(idx, dtype=7)
    a = run_analysis(g.model())
    g1 = group_of(a, "c1")
    assert not g1.prunable and blocked_by(g1, "MaxPool 'pool'", "Indices")


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_mean_over_spatial_axes(opset, keepdims):
    g = G(opset=opset)
    x = g.input("x", [2, 3, 8, 8])
    h = g.op("Relu", [g.conv(x, 3, 8, "c1", k=3)])
    if opset >= 18:
        h = g.op("ReduceMean", [h, g.ints([-2, -1], "axes")], "rm", keepdims=keepdims)
    else:
        h = g.op("ReduceMean", [h], "rm", axes=[2, 3], keepdims=keepdims)
    if keepdims:
        g.output(g.conv(h, 8, 4, "c2"))
    else:
        g.output(g.op("Gemm", [h, g.weight([8, 4], "c2_w")], "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [2, 3, 4, 5, 7]})
    assert shape_of(new, "c2_w") == ((4, 5, 1, 1) if keepdims else (5, 4))
    assert run(new)[0].shape == ((2, 4, 1, 1) if keepdims else (2, 4))


@pytest.mark.parametrize("opset", [11, 17])
def test_reduce_over_channel_axis_blocks(opset):
    g = G(opset=opset)
    x = g.input("x", [1, 3, 8, 8])
    h = g.conv(x, 3, 8, "c1", k=3)
    if opset >= 13:  # ReduceSum takes its axes as an input from opset 13
        h = g.op("ReduceSum", [h, g.ints([1], "axes")], "rs", keepdims=1)
    else:
        h = g.op("ReduceSum", [h], "rs", axes=[1], keepdims=1)
    g.output(g.conv(h, 1, 4, "c2"))
    a = run_analysis(g.model())
    g1 = group_of(a, "c1")
    assert not g1.prunable and blocked_by(g1, "ReduceSum 'rs'", "reduces")


def test_reduce_max_over_all_axes_blocks():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.op("ReduceMax", [g.conv(x, 3, 8, "c1", k=3)], "rmax", keepdims=0)  # no axes: all of them
    g.output(h)
    a = run_analysis(g.model())
    assert blocked_by(group_of(a, "c1"), "ReduceMax 'rmax'")


def test_reduce_with_noop_empty_axes_passes():
    g = G(opset=18)
    x = g.input("x", [1, 3, 8, 8])
    h = g.op("ReduceMean", [g.conv(x, 3, 8, "c1", k=3)], "rm", noop_with_empty_axes=1)
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert oracle_all(a, m) == 1


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_over_channel_axis_blocks(op):
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.op(op, [g.conv(x, 3, 8, "c1", k=3)], "sm", axis=1)
    g.output(g.conv(h, 8, 4, "c2"))
    a = run_analysis(g.model())
    g1 = group_of(a, "c1")
    assert not g1.prunable and blocked_by(g1, f"{op} 'sm'", "normalizes")


@pytest.mark.parametrize("axis", [-1, 2, 3])
def test_softmax_over_spatial_axis_passes(axis):
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.op("Softmax", [g.conv(x, 3, 8, "c1", k=3)], "sm", axis=axis)
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert oracle_all(a, m) == 1


def test_softmax_opset11_coerces_trailing_axes():
    """Before opset 13 Softmax flattens axes >= axis: axis=1 spans the channels too, and
    so does axis=0 (the default is 1)."""
    g = G(opset=11)
    x = g.input("x", [1, 3, 8, 8])
    h = g.op("Softmax", [g.conv(x, 3, 8, "c1", k=3)], "sm")
    g.output(g.conv(h, 8, 4, "c2"))
    a = run_analysis(g.model())
    assert blocked_by(group_of(a, "c1"), "Softmax 'sm'")


def test_argmax_over_channel_axis_blocks():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.op("ArgMax", [g.conv(x, 3, 8, "c1", k=3)], "am", axis=1)
    g.output(h, dtype=7)
    a = run_analysis(g.model())
    assert blocked_by(group_of(a, "c1"), "ArgMax 'am'")
