"""Attention heads: Q/K/V projections reshaped to (heads, head_dim), Q·Kᵀ and P·V as
MatMuls of two activations, reshaped back, output projection; whole heads are pruned and
the head count in the reshape targets is rewritten. Grouped-query attention: K/V heads
repeated for several query heads prune with them."""

import numpy as np

from tests.rules.graphs import G, group_of, members, oracle_all, prune, run_analysis, shape_of, value


def _attention(g, x, heads: int, kv_heads: int, hd: int = 4, hidden: int = 16):
    rep = heads // kv_heads

    def proj(name, n_heads):
        y = g.op("MatMul", [x, g.weight([hidden, n_heads * hd], f"{name}_w")], name)
        y = g.op("Add", [y, g.weight([n_heads * hd], f"{name}_b")], f"{name}_add")
        y = g.op("Reshape", [y, g.ints([2, 5, n_heads, hd], f"{name}_shape")], f"{name}_rs")
        return g.op("Transpose", [y], f"{name}_tr", perm=[0, 2, 1, 3])

    q, k, v = proj("q", heads), proj("k", kv_heads), proj("v", kv_heads)
    if rep > 1:  # repeat_kv: (B, kv, S, hd) -> (B, kv, rep, S, hd) -> (B, heads, S, hd)
        def repeat(t, name):
            t = g.op("Unsqueeze", [t, g.ints([2], f"{name}_ax")], f"{name}_unsq")
            t = g.op("Expand", [t, g.ints([2, kv_heads, rep, 5, hd], f"{name}_exp_shape")], f"{name}_exp")
            return g.op("Reshape", [t, g.ints([2, heads, 5, hd], f"{name}_rep_shape")], f"{name}_rep")

        k, v = repeat(k, "k"), repeat(v, "v")
    kt = g.op("Transpose", [k], "kt", perm=[0, 1, 3, 2])
    s = g.op("Softmax", [g.op("Mul", [g.op("MatMul", [q, kt], "qk"), g.init(np.float32(0.5), "scale")], "sc")], "sm", axis=-1)
    o = g.op("Transpose", [g.op("MatMul", [s, v], "pv")], "o_tr", perm=[0, 2, 1, 3])
    o = g.op("Reshape", [o, g.ints([2, 5, heads * hd], "o_shape")], "o_rs")
    return g.op("MatMul", [o, g.weight([heads * hd, 6], "o_w")], "o")


def test_heads_prune_whole_and_rewrite_reshape_targets():
    g = G()
    x = g.input("x", [2, 5, 16])
    g.output(_attention(g, x, heads=4, kv_heads=4))
    m = g.model()
    a = run_analysis(m)
    gr = group_of(a, "q")
    assert gr.prunable, gr.blocked
    assert gr.size == 4  # heads, not hidden positions
    assert {mm.tensor for mm in members(gr, role="out")} >= {"q_w", "k_w", "v_w"}
    assert oracle_all(a, m) >= 1
    new = prune(a, {gr.id: [0, 2]})
    assert shape_of(new, "q_w") == (16, 8) and shape_of(new, "o_w") == (8, 6)
    assert value(new, "q_shape").tolist() == [2, 5, 2, 4]
    assert value(new, "o_shape").tolist() == [2, 5, 8]


def test_grouped_query_attention_prunes_kv_groups_with_their_query_heads():
    g = G()
    x = g.input("x", [2, 5, 16])
    g.output(_attention(g, x, heads=4, kv_heads=2))
    m = g.model()
    a = run_analysis(m)
    gr = group_of(a, "q")
    assert gr.prunable, gr.blocked
    assert gr.size == 2  # K/V heads, each with its 2 query heads
    assert oracle_all(a, m) >= 1
    new = prune(a, {gr.id: [1]})
    assert shape_of(new, "q_w") == (16, 8) and shape_of(new, "k_w") == (16, 4)
    assert value(new, "q_shape").tolist() == [2, 5, 2, 4]
    assert value(new, "k_rep_shape").tolist() == [2, 2, 5, 4]
    assert value(new, "k_exp_shape").tolist() == [2, 1, 2, 5, 4]
