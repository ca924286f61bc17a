"""Elementwise rules: residual coupling, per-channel constants, scalars, untracked
operands (blocked), PRelu, Where, variadic Sum/Max, unary chains."""

import numpy as np
import pytest

from tests.rules.graphs import G, blocked_by, group_of, members, oracle_all, prune, run_analysis, shape_of, value


def test_residual_add_couples_two_convs():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.op("Relu", [g.conv(x, 3, 8, "c0", k=3)])
    y = g.conv(g.op("Relu", [g.conv(h, 8, 6, "c1", k=3)]), 6, 8, "c2", k=3, bias=True)
    s = g.op("Add", [h, y], "add")
    g.output(g.conv(g.op("Relu", [s]), 8, 4, "c3"))
    m = g.model()
    a = run_analysis(m)
    gr = group_of(a, "c0")
    assert gr is group_of(a, "c2")
    assert gr.prunable and gr.size == 8 and len(gr.roots) == 1
    assert set(gr.producers) == {"c0", "c2"}
    assert gr.kind == "conv+residual"
    assert {m.tensor for m in members(gr, role="in")} == {"c1_w", "c3_w"}
    g1 = group_of(a, "c1")
    assert g1 is not gr and g1.prunable
    assert oracle_all(a, m) == 2
    new = prune(a, {gr.id: [0, 2, 3, 5, 6]})
    assert shape_of(new, "c0_w") == (5, 3, 3, 3)
    assert shape_of(new, "c2_w") == (5, 6, 3, 3) and shape_of(new, "c2_b") == (5,)
    assert shape_of(new, "c1_w") == (6, 5, 3, 3)
    assert shape_of(new, "c3_w") == (4, 5, 1, 1)


@pytest.mark.parametrize("op", ["Mul", "Add", "Sub", "Div"])
def test_per_channel_constant_is_sliced(op):
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.conv(x, 3, 8, "c1", k=3)
    k = g.init(g.rng.uniform(0.5, 1.5, (1, 8, 1, 1)).astype(np.float32), "k")
    h = g.op(op, [k, h] if op == "Sub" else [h, k], "ew")  # constant on either side
    g.output(g.conv(g.op("Relu", [h]), 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    (km,) = members(g1, "k", "const")
    assert km.axis == 1 and km.op == op
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [1, 4, 7]})
    assert shape_of(new, "k") == (1, 3, 1, 1)
    np.testing.assert_array_equal(value(new, "k")[0, :, 0, 0], value(m, "k")[0, [1, 4, 7], 0, 0])


def test_rank_reduced_constant_is_sliced():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.conv(x, 3, 8, "c1", k=3)
    h = g.op("Mul", [h, g.weight([8, 1, 1], "k")], "mul")  # broadcast from the right
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert members(g1, "k", "const")[0].axis == 0
    oracle_all(a, m)
    assert shape_of(prune(a, {g1.id: [0, 1]}), "k") == (2, 1, 1)


def test_scalar_constants_pass():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.conv(x, 3, 8, "c1", k=3)
    h = g.op("Add", [h, g.init(np.float32(0.5), "s0")], "add")  # rank 0
    h = g.op("Mul", [h, g.init(np.array([2.0], np.float32), "s1")], "mul")  # shape (1,)
    h = g.op("Div", [h, g.init(np.ones((1, 1, 1, 1), np.float32) * 3, "s4")], "div")  # (1,1,1,1)
    h = g.op("Pow", [g.op("Relu", [h]), g.init(np.float32(2.0), "p")], "pow")
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert not members(g1, role="const")
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 1, 2]})
    assert shape_of(new, "s0") == () and shape_of(new, "s1") == (1,) and shape_of(new, "s4") == (1, 1, 1, 1)


def test_add_with_graph_input_blocks():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    x2 = g.input("x2", [1, 8, 8, 8])
    h = g.conv(x, 3, 8, "c1", k=3)
    h = g.op("Add", [h, x2], "add")
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert not g1.prunable
    assert blocked_by(g1, "Add 'add'", "x2")


def test_add_with_broadcast_graph_input_passes():
    """An activation operand that broadcasts over the channel axis (dim 1) is fine."""
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    x2 = g.input("x2", [1, 1, 8, 8])
    h = g.op("Add", [g.conv(x, 3, 8, "c1", k=3), x2], "add")
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert oracle_all(a, m) == 1


def test_prelu_per_channel_slope():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.conv(x, 3, 8, "c1", k=3)
    h = g.op("PRelu", [h, g.weight([8, 1, 1], "slope")], "prelu")
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    (sm,) = members(g1, "slope")
    assert sm.op == "PRelu" and sm.axis == 0
    assert oracle_all(a, m) == 1
    assert shape_of(prune(a, {g1.id: [3, 4, 5, 6]}), "slope") == (4, 1, 1)


def test_where_with_constant_condition():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.conv(x, 3, 8, "c1", k=3)
    cond = g.init((np.arange(8) % 2 == 0).reshape(1, 8, 1, 1), "cond")
    h = g.op("Where", [cond, h, g.init(np.float32(0.0), "zero")], "where")
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    (cm,) = members(g1, "cond")
    assert cm.role == "const" and cm.axis == 1
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 1, 2, 5]})
    np.testing.assert_array_equal(value(new, "cond").reshape(-1), [True, False, True, False])


@pytest.mark.parametrize("op", ["Sum", "Max", "Min", "Mean"])
def test_variadic_ops_unify_all_operands(op):
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    hs = [g.conv(x, 3, 8, f"c{i}", k=3) for i in range(3)]
    h = g.op(op, hs + [g.weight([8, 1, 1], "k")], "var")
    g.output(g.conv(h, 8, 4, "cout"))
    m = g.model()
    a = run_analysis(m)
    gr = group_of(a, "c0")
    assert gr is group_of(a, "c1") is group_of(a, "c2")
    assert gr.prunable and set(gr.producers) == {"c0", "c1", "c2"}
    assert members(gr, "k", "const")
    assert oracle_all(a, m) == 1
    new = prune(a, {gr.id: [0, 1, 2, 3]})
    for i in range(3):
        assert shape_of(new, f"c{i}_w") == (4, 3, 3, 3)
    assert shape_of(new, "k") == (4, 1, 1)


def test_unary_chain_passes():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.conv(x, 3, 8, "c1", k=3, bias=True)
    for op in ("Relu", "Sigmoid", "HardSwish", "Tanh", "Neg", "Identity"):
        h = g.op(op, [h], op.lower())
    h = g.op("Clip", [h, g.init(np.float32(-0.3), "lo"), g.init(np.float32(0.4), "hi")], "clip")
    h = g.op("LeakyRelu", [h], "leaky", alpha=0.2)
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert {(m.tensor, m.role) for m in g1.members} == {("c1_w", "out"), ("c1_b", "bias"), ("c2_w", "in")}
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 3, 4]})
    assert shape_of(new, "lo") == () and shape_of(new, "hi") == ()
    assert shape_of(new, "c2_w") == (4, 3, 1, 1)


def test_add_with_concat_cuts_spaces_to_align():
    """Adding a conv output to a concat of two halves: the spaces are cut to align."""
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    a_ = g.conv(x, 3, 4, "ca")
    b_ = g.conv(x, 3, 4, "cb")
    cat = g.op("Concat", [a_, b_], "cat", axis=1)
    s = g.op("Add", [g.conv(x, 3, 8, "cc"), cat], "add")
    g.output(g.conv(s, 8, 4, "cout"))
    m = g.model()
    a = run_analysis(m)
    assert a.passes >= 2
    ga, gb = group_of(a, "ca"), group_of(a, "cb")
    assert ga is not gb and ga.prunable and gb.prunable
    assert {m.node for m in members(ga, role="out")} == {"ca", "cc"}
    assert {m.node for m in members(gb, role="out")} == {"cb", "cc"}
    assert oracle_all(a, m) == 2
    new = prune(a, {ga.id: [0, 1], gb.id: [1, 2, 3]})
    assert shape_of(new, "cc_w") == (5, 3, 1, 1)
    assert shape_of(new, "cout_w") == (4, 5, 1, 1)
