"""ONNX Runtime's fused contrib ops (com.microsoft): FastGelu/BiasGelu pass channels and
slice their bias, Attention and MultiHeadAttention prune whole heads and rewrite
num_heads, SkipLayerNormalization is a residual + LayerNorm (blocked by default), and an
op without a rule blocks with its domain named."""

import numpy as np
import onnx
from onnx import helper

from onnxprune.cost import CostModel, count_macs
from tests.rules.graphs import (G, attr, blocked_by, group_of, members, oracle_all, prune, run, run_analysis,
                                shape_of)

MS = "com.microsoft"
B, S, D = 2, 5, 16


def _model(g: G) -> onnx.ModelProto:
    """G.model() with the com.microsoft opset imported (graph outputs declared with shapes)."""
    graph = helper.make_graph(g.nodes, "g", g.inputs, g.outputs, g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", g.opset), helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    return m


def _ffn(g, x, act: str, hidden: int = 12):
    h = g.op("MatMul", [x, g.weight([D, hidden], "up_w")], "up")
    if act == "BiasGelu":
        h = g.op("BiasGelu", [h, g.weight([hidden], "act_b")], "act", domain=MS)
    else:
        h = g.op("FastGelu", [h, g.weight([hidden], "act_b")], "act", domain=MS)
    return g.op("MatMul", [h, g.weight([hidden, D], "down_w")], "down")


def test_bias_gelu_and_fast_gelu_pass_channels_and_slice_their_bias():
    for act in ("BiasGelu", "FastGelu"):
        g = G()
        x = g.input("x", [B, S, D])
        g.output(_ffn(g, x, act), [B, S, D])
        m = _model(g)
        a = run_analysis(m)
        gr = group_of(a, "up")
        assert gr.prunable, gr.blocked
        assert gr.size == 12 and members(gr, "act_b")
        assert oracle_all(a, m) == 1
        new = prune(a, {gr.id: [0, 3, 5, 7]})
        assert shape_of(new, "act_b") == (4,) and shape_of(new, "down_w") == (4, D)


def _fused_attention(g, x, heads=4, hd=4, bias=True, **attrs):
    ins = [x, g.weight([D, 3 * heads * hd], "qkv_w")] + ([g.weight([3 * heads * hd], "qkv_b")] if bias else [])
    o = g.op("Attention", ins, "attn", domain=MS, num_heads=heads, **attrs)
    return g.op("MatMul", [o, g.weight([heads * hd, D], "o_w")], "o")


def test_attention_prunes_whole_heads_of_the_packed_qkv_weight():
    g = G()
    x = g.input("x", [B, S, D])
    g.output(_fused_attention(g, x), [B, S, D])
    m = _model(g)
    a = run_analysis(m)
    gr = group_of(a, "attn")
    assert gr.prunable, gr.blocked
    assert gr.size == 4 and gr.kind == "attention-heads"
    assert {mm.tensor for mm in members(gr)} >= {"qkv_w", "qkv_b", "o_w"}
    assert oracle_all(a, m) == 1
    new = prune(a, {gr.id: [1, 3]})
    assert shape_of(new, "qkv_w") == (D, 3 * 2 * 4) and shape_of(new, "qkv_b") == (24,)
    assert shape_of(new, "o_w") == (8, D) and attr(new, "attn", "num_heads") == 2
    # the kept heads are Q, K and V columns of heads 1 and 3
    dense = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}["qkv_w"]
    cols = [part * 16 + h * 4 + i for part in range(3) for h in (1, 3) for i in range(4)]
    pruned = {t.name: onnx.numpy_helper.to_array(t) for t in new.graph.initializer}["qkv_w"]
    np.testing.assert_array_equal(pruned, dense[:, cols])


def test_attention_macs_match_count_macs_before_and_after():
    g = G()
    x = g.input("x", [B, S, D])
    g.output(_fused_attention(g, x), [B, S, D])
    m = _model(g)
    a = run_analysis(m)
    cost, table = CostModel(a), a.table
    gr = group_of(a, "attn")
    assert cost.macs(lambda s: table.size(s)) == count_macs(m)
    new = prune(a, {gr.id: [0]})
    kept = {r: 1 for r in gr.roots}
    assert cost.macs(lambda s: kept.get(table.find(s), table.size(s))) == count_macs(new)
    # packed projection B*S*D*48, scores 2*B*S*S*16, output projection B*S*16*D
    assert count_macs(m) == B * S * D * 48 + 2 * B * S * S * 16 + B * S * 16 * D


def test_attention_with_unequal_qkv_hidden_sizes_is_blocked_with_a_reason():
    g = G()
    x = g.input("x", [B, S, D])
    w = g.weight([D, 16 + 16 + 8], "qkv_w")
    o = g.op("Attention", [x, w], "attn", domain=MS, num_heads=4, qkv_hidden_sizes=[16, 16, 8])
    g.output(g.op("MatMul", [o, g.weight([8, D], "o_w")], "o"), [B, S, D])
    a = run_analysis(_model(g))
    gr = group_of(a, "attn")
    assert not gr.prunable and blocked_by(gr, "Attention 'attn'", "hidden sizes differ")


def _mha(g, x, heads=4, hd=4, key_4d=False):
    def proj(name):
        return g.op("MatMul", [x, g.weight([D, heads * hd], f"{name}_w")], name)

    q, k, v = proj("q"), proj("k"), proj("v")
    if key_4d:  # (B, heads, S, hd): already split into heads
        k = g.op("Transpose", [g.op("Reshape", [k, g.ints([B, S, heads, hd])], "k_rs")], "k_tr", perm=[0, 2, 1, 3])
        v = g.op("Transpose", [g.op("Reshape", [v, g.ints([B, S, heads, hd])], "v_rs")], "v_tr", perm=[0, 2, 1, 3])
    bias = g.weight([3 * heads * hd], "qkv_b")
    o = g.op("MultiHeadAttention", [q, k, v, bias], "mha", domain=MS, num_heads=heads)
    return g.op("MatMul", [o, g.weight([heads * hd, D], "o_w")], "o")


def test_multi_head_attention_unifies_q_k_v_as_whole_heads():
    g = G()
    x = g.input("x", [B, S, D])
    g.output(_mha(g, x), [B, S, D])
    m = _model(g)
    a = run_analysis(m)
    gr = group_of(a, "q")
    assert gr.prunable, gr.blocked
    assert gr.size == 4 and gr.kind == "attention-heads"
    assert {mm.tensor for mm in members(gr)} >= {"q_w", "k_w", "v_w", "qkv_b", "o_w"}
    assert oracle_all(a, m) == 1
    new = prune(a, {gr.id: [0, 2, 3]})
    assert shape_of(new, "q_w") == (D, 12) and shape_of(new, "qkv_b") == (36,)
    assert attr(new, "mha", "num_heads") == 3
    cost, table = CostModel(a), a.table
    assert cost.macs(lambda s: table.size(s)) == count_macs(m)
    kept = {r: 3 for r in gr.roots}
    assert cost.macs(lambda s: kept.get(table.find(s), table.size(s))) == count_macs(new)


def test_multi_head_attention_with_4d_keys_blocks_cleanly():
    g = G()
    x = g.input("x", [B, S, D])
    g.output(_mha(g, x, key_4d=True), [B, S, D])
    a = run_analysis(_model(g))
    gr = group_of(a, "q")
    assert not gr.prunable and blocked_by(gr, "MultiHeadAttention 'mha'", "not analyzed")


def _skip_ln(g, x):
    h = g.op("MatMul", [x, g.weight([D, D], "proj_w")], "proj")
    gamma, beta = g.weight([D], "gamma"), g.weight([D], "beta")
    return g.op("SkipLayerNormalization", [h, x, gamma, beta, g.weight([D], "skip_b")], "sln", domain=MS)


def test_skip_layer_norm_is_a_blocked_residual_unless_norm_spaces_are_pruned():
    g = G()
    x = g.input("x", [B, S, D])
    h = g.op("MatMul", [x, g.weight([D, D], "in_w")], "inp")
    y = _skip_ln(g, h)
    g.output(g.op("MatMul", [y, g.weight([D, 3], "head_w")], "head"), [B, S, 3])
    m = _model(g)
    gr = group_of(run_analysis(m), "inp")
    assert not gr.prunable and blocked_by(gr, "SkipLayerNormalization 'sln'", "normalizes across")
    a = run_analysis(m, prune_norm_spaces=True)
    gr = group_of(a, "inp")
    assert gr.prunable and gr.inexact, gr.blocked
    assert group_of(a, "proj") is gr  # input and skip are one residual space
    assert {mm.tensor for mm in members(gr)} >= {"gamma", "beta", "skip_b", "head_w", "proj_w", "in_w"}
    new = prune(a, {gr.id: [0, 1, 2, 5, 8, 9, 10, 15]})
    assert shape_of(new, "gamma") == (8,) and shape_of(new, "head_w") == (8, 3)
    assert run(new)[0].shape == (B, S, 3)


def test_contrib_op_without_a_rule_blocks_with_its_domain_named_and_the_rest_prunes():
    g = G()
    x = g.input("x", [B, S, D])
    h = g.op("Relu", [g.op("MatMul", [x, g.weight([D, 12], "a_w")], "a")], "relu")
    h = g.op("Relu", [g.op("MatMul", [h, g.weight([12, 10], "b_w")], "b")], "relu2")
    g.output(g.op("FusedMatMul", [h, g.weight([10, 3], "fm_w")], "fm", domain=MS, alpha=1.0), [B, S, 3])
    m = _model(g)
    a = run_analysis(m)
    gr = group_of(a, "b")
    assert not gr.prunable and blocked_by(gr, "FusedMatMul 'fm'", "(domain 'com.microsoft') has no channel rule")
    ok = group_of(a, "a")
    assert ok.prunable, ok.blocked
    assert oracle_all(a, m) == 1
    new = prune(a, {ok.id: [0, 4, 9]})
    assert shape_of(new, "a_w") == (D, 3) and shape_of(new, "b_w") == (3, 10) and shape_of(new, "fm_w") == (10, 3)
