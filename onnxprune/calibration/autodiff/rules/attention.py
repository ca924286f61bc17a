"""ONNX Runtime's fused attention (``com.microsoft:Attention`` and ``MultiHeadAttention``),
recomputed in default-domain ops for its backward.

Forward: QKV = X·W (+ bias), split into Q, K, V of N heads of size h; S = Q·Kᵀ·scale (+ the
mask's filter value where keys are masked); P = softmax(S); out = P·V. Backward from G:
dV = Pᵀ·G, dP = G·Vᵀ, dS = P ⊙ (dP − Σ dP ⊙ P), dQ = dS·K·scale, dK = dSᵀ·Q·scale;
dX = dQKV·Wᵀ, dW = Xᵀ·dQKV, d bias = Σ dQKV.

``MultiHeadAttention`` takes Q, K, V projected already (3-D), an optional packed bias
[Q | K | V]; the same backward without the projection. Supported: no mask, a 1-D ``mask_index`` of batch size (valid key length per sequence) or
a 2-D raw 0/1 mask (batch, keys). Past/present state, a unidirectional (causal) mask,
Q and K widths that differ, an attention bias, rotary embeddings and other mask layouts
raise :class:`NoRule` with the reason.
"""

from __future__ import annotations

import math

import numpy as np

from ..ops import attr, reduce, reshape, transpose
from . import NoRule, register

MS = "com.microsoft"


def _input(node, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _heads(b, t: str, n: int, h: int, shape) -> str:
    """[B, S, N·h] -> [B, N, S, h]."""
    return transpose(b, reshape(b, t, [shape[0], shape[1], n, h], hint="heads"), [0, 2, 1, 3], hint="heads")


def _merge(b, t: str, shape) -> str:
    """[B, N, S, h] -> [B, S, N·h]."""
    return reshape(b, transpose(b, t, [0, 2, 1, 3], hint="merge"), list(shape), hint="merge")


def _mask_bias(b, node, mask: str, batch: int, keys: int, like: str) -> str | None:
    if not mask:
        return None
    ms = b.shape(mask)
    fill = attr(node, "mask_filter_value", -10000.0)
    if len(ms) == 1 and ms[0] == batch:  # valid key length per sequence
        pos = b.const(np.arange(keys, dtype=np.int64).reshape(1, keys), hint="keys")
        ends = reshape(b, b.op("Cast", [mask], to=7), [batch, 1], hint="ends")
        valid = b.op("Cast", [b.op("Less", [pos, ends])], to=b.elem(like))
    elif len(ms) == 2 and ms == [batch, keys]:  # raw 0/1 mask
        valid = b.op("Cast", [b.op("Cast", [mask], to=9)], to=b.elem(like))
    else:
        raise NoRule(f"mask_index of shape {ms} (only (batch,) lengths or a (batch, keys) 0/1 mask)")
    masked = b.op("Sub", [b.scalar(1.0, like), valid])
    return reshape(b, b.op("Mul", [masked, b.scalar(fill, like)]), [batch, 1, 1, keys], hint="maskb")


def _sdpa_backward(b, q, k, v, g, sc: float, mask_bias, like):
    """(dQ, dK, dV), all [B, N, ·, h], of out = softmax(Q·Kᵀ·scale + mask)·V given G."""
    kt = transpose(b, k, [0, 1, 3, 2], hint="kT")
    s = b.op("Mul", [b.op("MatMul", [q, kt]), b.scalar(sc, like)], hint="scores")
    if mask_bias is not None:
        s = b.op("Add", [s, mask_bias], hint="scores")
    p = b.op("Softmax", [s], hint="probs", axis=-1)
    dv = b.op("MatMul", [transpose(b, p, [0, 1, 3, 2], hint="pT"), g], hint="dv")
    dp = b.op("MatMul", [g, transpose(b, v, [0, 1, 3, 2], hint="vT")], hint="dp")
    ds = b.op("Mul", [p, b.op("Sub", [dp, reduce(b, "ReduceSum", b.op("Mul", [dp, p]), [3], keepdims=True)])])
    ds = b.op("Mul", [ds, b.scalar(sc, like)], hint="ds")
    dq = b.op("MatMul", [ds, k], hint="dq")
    dk = b.op("MatMul", [transpose(b, ds, [0, 1, 3, 2], hint="dsT"), q], hint="dk")
    return dq, dk, dv


@register(f"{MS}:Attention")
def attention(node, b, gy, needs):
    x, w, bias, mask = node.input[0], node.input[1], _input(node, 2), _input(node, 3)
    if _input(node, 4) or _input(node, 5) or any(_input(node, i) for i in range(6, len(node.input))):
        raise NoRule("past state, attention bias or extra inputs")
    if len(gy) > 1 and any(g is not None for g in gy[1:]):
        raise NoRule("gradient through the present state")
    if attr(node, "unidirectional", 0) or attr(node, "do_rotary", 0):
        raise NoRule("unidirectional (causal) or rotary attention")
    n = attr(node, "num_heads", 0)
    xs, ws = b.shape(x), b.shape(w)
    sizes = attr(node, "qkv_hidden_sizes", None) or ([ws[1] // 3] * 3 if len(ws) == 2 else None)
    if len(xs) != 3 or len(ws) != 2 or not n or sizes is None or sum(sizes) != ws[1] or sizes[0] != sizes[1] \
            or sizes[0] % n or sizes[2] % n:
        raise NoRule("input/weight layout (needs (B, S, in), (in, Hq + Hk + Hv) with Hq = Hk, each divisible "
                     "by num_heads)")
    hqk, hv = sizes[0] // n, sizes[2] // n
    bsz, seq = xs[0], xs[1]
    sc = attr(node, "scale", None) or 1.0 / math.sqrt(hqk)
    qkv = b.op("MatMul", [x, w], hint="qkv")
    if bias:
        qkv = b.op("Add", [qkv, bias], hint="qkv")
    shapes = [[bsz, seq, size] for size in sizes]
    parts = b.op("Split", [qkv, b.ints(list(sizes))], hint="qkv", n_out=3, axis=2)
    q, k, v = (_heads(b, t, n, d, shape) for t, d, shape in zip(parts, (hqk, hqk, hv), shapes))
    mask_bias = _mask_bias(b, node, mask, bsz, seq, x)
    dq, dk, dv = _sdpa_backward(b, q, k, v, _heads(b, gy[0], n, hv, shapes[2]), sc, mask_bias, x)
    dqkv = b.op("Concat", [_merge(b, t, shape) for t, shape in zip((dq, dk, dv), shapes)], hint="dqkv", axis=2)
    out = {}
    if needs[0]:
        out[0] = b.op("MatMul", [dqkv, transpose(b, w, [1, 0], hint="wT")], hint="dx")
    if len(needs) > 1 and needs[1]:
        x2 = reshape(b, x, [bsz * seq, xs[2]], hint="x2")
        out[1] = b.op("MatMul", [transpose(b, x2, [1, 0], hint="x2T"), reshape(b, dqkv, [bsz * seq, ws[1]])],
                      hint="dw")
    if len(needs) > 2 and needs[2] and bias:
        out[2] = reduce(b, "ReduceSum", dqkv, [0, 1], keepdims=False, hint="dbias")
    if len(needs) > 3 and needs[3]:
        raise NoRule("no gradient w.r.t. the mask")
    return out


@register(f"{MS}:MultiHeadAttention")
def multi_head_attention(node, b, gy, needs):
    """Separate 3-D query [B, S, H], key [B, T, H] and value [B, T, Hv] (projections done
    outside), an optional packed bias [Q | K | V] and a key padding mask."""
    q_in, k_in, v_in, bias, mask = (_input(node, i) for i in range(5))
    if any(_input(node, i) for i in range(5, len(node.input))):
        raise NoRule("attention bias, past state or extra inputs")
    if any(g is not None for g in gy[1:]):
        raise NoRule("gradient through the present state or qk output")
    if attr(node, "unidirectional", 0):
        raise NoRule("unidirectional (causal) attention")
    if not (k_in and v_in) or any(len(b.shape(t)) != 3 for t in (q_in, k_in, v_in)):
        raise NoRule("packed QKV/KV or 4-D key/value layouts")
    n = attr(node, "num_heads", 0)
    qs, ks, vs = b.shape(q_in), b.shape(k_in), b.shape(v_in)
    if not n or qs[2] != ks[2] or qs[2] % n or vs[2] % n:
        raise NoRule("Q/K hidden sizes differ or do not divide into num_heads")
    h, hv = qs[2] // n, vs[2] // n
    sc = attr(node, "scale", None) or 1.0 / math.sqrt(h)
    parts = [q_in, k_in, v_in]
    if bias:
        pieces = b.op("Split", [bias, b.ints([qs[2], ks[2], vs[2]])], hint="bias", n_out=3, axis=0)
        parts = [b.op("Add", [t, p], hint="biased") for t, p in zip(parts, pieces)]
    q, k, v = (_heads(b, t, n, d, shape) for t, d, shape in zip(parts, (h, h, hv), (qs, ks, vs)))
    g = _heads(b, gy[0], n, hv, [qs[0], qs[1], vs[2]])
    dq, dk, dv = _sdpa_backward(b, q, k, v, g, sc, _mask_bias(b, node, mask, qs[0], ks[1], q_in), q_in)
    grads = [_merge(b, t, shape) for t, shape in zip((dq, dk, dv), (qs, ks, vs))]
    out = {i: grads[i] for i in range(3) if needs[i]}
    if len(needs) > 3 and needs[3] and bias:
        out[3] = b.op("Concat", [reduce(b, "ReduceSum", t, [0, 1], keepdims=False) for t in grads], hint="dbias",
                      axis=0)
    if len(needs) > 4 and needs[4]:
        raise NoRule("no gradient w.r.t. the mask")
    return out
