"""Gemm and MatMul rules: transposes, alpha/beta, bias shapes, constant weight on either
side, and MatMul of two activations (blocked)."""

import numpy as np
import pytest

from tests.rules.graphs import G, blocked_by, group_of, members, oracle_all, prune, run_analysis, shape_of, value


def _gemm_chain(trans_b: int, bias_shape, alpha=1.0, beta=1.0):
    g = G()
    x = g.input("x", [2, 6])
    w1 = g.weight([8, 6] if trans_b else [6, 8], "g1_w")
    ins = [x, w1] + ([g.weight(bias_shape, "g1_b")] if bias_shape is not None else [])
    h = g.op("Relu", [g.op("Gemm", ins, "g1", transB=trans_b, alpha=alpha, beta=beta)])
    w2 = g.weight([4, 8] if trans_b else [8, 4], "g2_w")
    g.output(g.op("Gemm", [h, w2, g.weight([4], "g2_b")], "g2", transB=trans_b))
    return g.model()


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias_shape", [None, [8], [1, 8]])
def test_gemm_chain(trans_b, bias_shape):
    m = _gemm_chain(trans_b, bias_shape)
    a = run_analysis(m)
    g1, g2 = group_of(a, "g1"), group_of(a, "g2")
    assert g1.prunable and g1.size == 8 and g1.kind == "linear"
    assert not g2.prunable and blocked_by(g2, "graph output")
    (out,) = members(g1, "g1_w", "out")
    (inp,) = members(g1, "g2_w", "in")
    assert (out.axis, inp.axis) == ((0, 1) if trans_b else (1, 0))
    if bias_shape is not None:
        (b,) = members(g1, "g1_b", "bias")
        assert b.axis == len(bias_shape) - 1
    # the graph input's features are fixed
    assert not any(m.tensor == "g1_w" and m.role == "in" for gr in a.groups for m in gr.members)
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 3, 4, 7]})
    assert shape_of(new, "g1_w") == ((4, 6) if trans_b else (6, 4))
    assert shape_of(new, "g2_w") == ((4, 4) if trans_b else (4, 4))
    if bias_shape is not None:
        assert shape_of(new, "g1_b") == tuple(bias_shape[:-1]) + (4,)
        np.testing.assert_array_equal(value(new, "g1_b").reshape(-1), value(m, "g1_b").reshape(-1)[[0, 3, 4, 7]])


def test_gemm_alpha_beta():
    m = _gemm_chain(1, [8], alpha=0.5, beta=2.0)
    a = run_analysis(m)
    g1 = group_of(a, "g1")
    assert g1.prunable
    assert oracle_all(a, m) == 1


def test_gemm_trans_a_reads_channels_on_axis_0():
    g = G()
    x = g.input("x", [2, 6])
    h = g.op("Relu", [g.op("Gemm", [x, g.weight([6, 8], "g1_w"), g.weight([8], "g1_b")], "g1")])
    t = g.op("Transpose", [h], "t", perm=[1, 0])  # (8, 2): channels on axis 0
    g.output(g.op("Gemm", [t, g.weight([8, 4], "g2_w")], "g2", transA=1))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "g1")
    assert g1.prunable
    (inp,) = members(g1, "g2_w", "in")
    assert inp.axis == 0
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [1, 2, 3]})
    assert shape_of(new, "g2_w") == (3, 4)


def test_gemm_constant_left_operand():
    """y = W @ B with B an activation whose channels are on axis 0: y's axis 0 is new."""
    g = G()
    x = g.input("x", [2, 6])
    h = g.op("Relu", [g.op("Gemm", [x, g.weight([6, 8], "g1_w")], "g1")])
    t = g.op("Transpose", [h], "t", perm=[1, 0])  # (8, 2)
    y = g.op("Relu", [g.op("Gemm", [g.weight([5, 8], "g2_w"), t, g.weight([5, 1], "g2_b")], "g2")])  # (5, 2)
    y = g.op("Transpose", [y], "t2", perm=[1, 0])  # (2, 5)
    g.output(g.op("Gemm", [y, g.weight([5, 3], "g3_w")], "g3"))
    m = g.model()
    a = run_analysis(m)
    g1, g2 = group_of(a, "g1"), group_of(a, "g2")
    assert g1.prunable and g2.prunable
    assert members(g1, "g2_w", "in")[0].axis == 1
    assert members(g2, "g2_w", "out")[0].axis == 0
    assert members(g2, "g2_b", "bias")[0].axis == 0
    assert oracle_all(a, m) == 2
    new = prune(a, {g1.id: [0, 1, 2, 3, 4], g2.id: [1, 2]})
    assert shape_of(new, "g2_w") == (2, 5)
    assert shape_of(new, "g2_b") == (2, 1)
    assert shape_of(new, "g3_w") == (2, 3)


def test_gemm_of_two_activations_blocks():
    g = G()
    x = g.input("x", [2, 6])
    h = g.op("Relu", [g.op("Gemm", [x, g.weight([6, 8], "g1_w")], "g1")])
    h2 = g.op("Gemm", [x, g.weight([6, 8], "g2_w")], "g2")
    g.output(g.op("Gemm", [h, h2], "g3", transB=1))
    m = g.model()
    a = run_analysis(m)
    for name in ("g1", "g2"):
        gr = group_of(a, name)
        assert not gr.prunable and blocked_by(gr, "Gemm 'g3'")


@pytest.mark.parametrize("shape", [[2, 6], [2, 5, 6]])
def test_matmul_constant_right_weight(shape):
    g = G()
    x = g.input("x", shape)
    h = g.op("MatMul", [x, g.weight([6, 8], "m1_w")], "m1")
    h = g.op("Relu", [g.op("Add", [h, g.weight([8], "m1_b")], "add")])
    g.output(g.op("MatMul", [h, g.weight([8, 4], "m2_w")], "m2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "m1")
    assert g1.prunable and g1.size == 8 and g1.kind == "linear"
    assert {(m.tensor, m.axis, m.role) for m in g1.members} == {
        ("m1_w", 1, "out"), ("m1_b", 0, "const"), ("m2_w", 0, "in")}
    assert not group_of(a, "m2").prunable
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 5, 6]})
    assert shape_of(new, "m1_w") == (6, 3)
    assert shape_of(new, "m1_b") == (3,)
    assert shape_of(new, "m2_w") == (3, 4)


def test_matmul_constant_left_weight():
    g = G()
    x = g.input("x", [2, 6, 5])  # features on axis -2
    h = g.op("Relu", [g.op("MatMul", [g.weight([8, 6], "m1_w"), x], "m1")])  # (2, 8, 5)
    g.output(g.op("MatMul", [g.weight([4, 8], "m2_w"), h], "m2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "m1")
    assert g1.prunable
    assert members(g1, "m1_w", "out")[0].axis == 0
    assert members(g1, "m2_w", "in")[0].axis == 1
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [2, 3, 7]})
    assert shape_of(new, "m1_w") == (3, 6)
    assert shape_of(new, "m2_w") == (4, 3)


def test_matmul_of_two_activations_blocks():
    g = G()
    x = g.input("x", [2, 5, 6])
    q = g.op("MatMul", [x, g.weight([6, 8], "q_w")], "q")
    k = g.op("MatMul", [x, g.weight([6, 8], "k_w")], "k")
    kt = g.op("Transpose", [k], "kt", perm=[0, 2, 1])
    s = g.op("Softmax", [g.op("MatMul", [q, kt], "qk")], "sm", axis=-1)
    g.output(g.op("MatMul", [s, g.weight([5, 3], "o_w")], "o"))
    m = g.model()
    a = run_analysis(m)
    for name in ("q", "k"):
        gr = group_of(a, name)
        assert not gr.prunable
        assert blocked_by(gr, "MatMul", "qk")
    assert a.prunable == []
