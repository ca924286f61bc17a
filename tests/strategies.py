"""Hypothesis strategies for random, valid, tiny ONNX CNNs (opset 17, IR 8, float32).

A strategy draws a *spec* (plain, printable data: widths, kernel sizes, block kinds) and
``build(spec)`` turns it into a ModelProto with ``tests.rules.graphs.G``. Keeping the two
apart gives short falsifying examples and lets a regression test pin a spec with
``@example(spec)`` or by calling ``build`` directly.

Spec::

    {"c": C, "h": H, "seed": s,
     "blocks": [("conv", k, cout, bias, act), ...],
     "head": ("gap_gemm", nout, transB) | ...}

The input is ``x: float32 [N, C, H, H]`` with a symbolic batch dim ``N``; the output ``y``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tests.rules.graphs import G

ACTS = [None, "relu", "sigmoid", "hardswish", "clip", "leakyrelu", "silu"]
WIDTH = st.integers(2, 8)


# ---- building ------------------------------------------------------------------------

def _act(g: G, x: str, act: str | None) -> str:
    if act is None:
        return x
    if act == "relu":
        return g.op("Relu", [x])
    if act == "sigmoid":
        return g.op("Sigmoid", [x])
    if act == "hardswish":
        return g.op("HardSwish", [x])
    if act == "clip":  # ReLU6, bounds as constant inputs (opset >= 11)
        return g.op("Clip", [x, g.init(np.array(0.0, np.float32)), g.init(np.array(6.0, np.float32))])
    if act == "leakyrelu":
        return g.op("LeakyRelu", [x], alpha=0.1)
    if act == "silu":
        return g.op("Mul", [x, g.op("Sigmoid", [x])])
    raise ValueError(act)


def _bn(g: G, x: str, c: int) -> str:
    rng = g.rng
    scale = g.init((rng.standard_normal(c) * 0.5 + 1).astype(np.float32))
    bias = g.init((rng.standard_normal(c) * 0.1).astype(np.float32))
    mean = g.init((rng.standard_normal(c) * 0.1).astype(np.float32))
    var = g.init((rng.uniform(0.5, 1.5, c)).astype(np.float32))
    return g.op("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5)


def _block(g: G, x: str, c: int, h: int, b: tuple) -> tuple[str, int, int]:
    kind = b[0]
    if kind == "conv":
        _, k, cout, bias, act = b
        return _act(g, g.conv(x, c, cout, k=k, bias=bias), act), cout, h
    if kind == "bn":
        return _bn(g, x, c), c, h
    if kind == "dw":
        _, act = b
        return _act(g, g.conv(x, c, c, k=3, group=c), act), c, h
    if kind == "gconv":
        _, pre, groups, k, cout, act = b
        if pre is not None:
            x, c = g.conv(x, c, pre, k=1), pre
        assert c % groups == 0 and cout % groups == 0
        return _act(g, g.conv(x, c, cout, k=k, group=groups, bias=True), act), cout, h
    if kind == "res":  # y = act(conv3(act(conv1(x))) + shortcut)
        _, d, proj, act = b
        if not proj:
            assert d == c
        a = g.conv(_act(g, g.conv(x, c, d, k=3), act), d, d, k=1, bias=True)
        s = g.conv(x, c, d, k=1) if proj else x
        return _act(g, g.op("Add", [a, s]), act), d, h
    if kind == "concat":
        _, wa, wb, k, cout = b
        a = _act(g, g.conv(x, c, wa, k=1), "relu")
        bb = _act(g, g.conv(x, c, wb, k=3), "sigmoid")
        cat = g.op("Concat", [a, bb], axis=1)
        return g.conv(cat, wa + wb, cout, k=k, bias=True), cout, h
    if kind == "split":
        _, sizes, wa, wb, merge = b
        assert sum(sizes) == c
        p, q = g.op("Split", [x, g.ints(list(sizes))], n_out=2, axis=1)
        a = _act(g, g.conv(p, sizes[0], wa, k=1, bias=True), "relu")
        bb = _act(g, g.conv(q, sizes[1], wb, k=3), "hardswish")
        if merge == "add":
            assert wa == wb
            return g.op("Add", [a, bb]), wa, h
        return g.op("Concat", [a, bb], axis=1), wa + wb, h
    if kind == "slice":
        _, start, end = b
        return g.op("Slice", [x, g.ints([start]), g.ints([end]), g.ints([1])]), end - start, h
    if kind == "se":
        _, r = b
        s = g.op("GlobalAveragePool", [x])
        s = g.op("Relu", [g.conv(s, c, r, k=1, bias=True)])
        s = g.op("Sigmoid", [g.conv(s, r, c, k=1, bias=True)])
        return g.op("Mul", [x, s]), c, h
    if kind == "pool":
        _, op, mode = b
        if mode == "down":
            return g.op(op, [x], kernel_shape=[2, 2], strides=[2, 2]), c, h // 2
        return g.op(op, [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), c, h
    raise ValueError(kind)


def _head(g: G, x: str, c: int, h: int, head: tuple) -> str:
    kind = head[0]
    if kind in ("gap_gemm", "flat_gemm"):
        _, nout, trans_b = head
        if kind == "gap_gemm":
            x, fin = g.op("GlobalAveragePool", [x]), c
        else:
            fin = c * h * h
        f = g.op("Flatten", [x], axis=1)
        w = g.weight([nout, fin] if trans_b else [fin, nout])
        return g.op("Gemm", [f, w, g.weight([nout])], name="y", transB=int(trans_b))
    if kind == "reshape_matmul":
        _, target, nout = head
        fin = c * h * h
        shape = [-1, fin] if target == "flat" else [0, -1]
        r = g.op("Reshape", [x, g.ints(shape)])
        m = g.op("MatMul", [r, g.weight([fin, nout])])
        return g.op("Add", [m, g.weight([nout])], name="y")
    if kind == "conv_out":
        _, k, cout = head
        return g.conv(x, c, cout, k=k, bias=True, name="y")
    raise ValueError(kind)


def build(spec: dict):
    """The ModelProto of a spec (deterministic: weights from ``spec['seed']``)."""
    g = G(opset=17, seed=spec["seed"])
    c, h = spec["c"], spec["h"]
    x = g.input("x", ["N", c, h, h])
    for b in spec["blocks"]:
        x, c, h = _block(g, x, c, h, b)
    g.output(_head(g, x, c, h, spec["head"]))
    return g.model()


def describe(spec: dict) -> str:
    """One line per block, for failure messages and reports."""
    return f"x[N,{spec['c']},{spec['h']},{spec['h']}] -> " + " -> ".join(
        [str(b) for b in spec["blocks"]] + [str(spec["head"])])


# ---- drawing -------------------------------------------------------------------------

def _draw_block(draw, c: int, h: int) -> tuple[tuple, int, int]:
    kinds = ["conv", "bn", "dw", "res", "concat", "se", "pool", "gconv", "split", "slice"]
    kind = draw(st.sampled_from(kinds))
    if c < 2 and kind in ("split", "slice"):
        kind = "conv"
    if kind == "conv":
        cout = draw(WIDTH)
        return ("conv", draw(st.sampled_from([1, 3])), cout, draw(st.booleans()), draw(st.sampled_from(ACTS))), cout, h
    if kind == "bn":
        return ("bn",), c, h
    if kind == "dw":
        return ("dw", draw(st.sampled_from(ACTS))), c, h
    if kind == "gconv":
        groups = draw(st.sampled_from([2, 4]))
        pre = None
        if c % groups:  # a 1x1 conv to a divisible width first
            pre = groups * draw(st.integers(1, 8 // groups))
        cout = groups * draw(st.integers(1, 8 // groups))
        return ("gconv", pre, groups, draw(st.sampled_from([1, 3])), cout, draw(st.sampled_from(ACTS))), cout, h
    if kind == "res":
        proj = draw(st.booleans())
        d = draw(WIDTH) if proj else c
        return ("res", d, proj, draw(st.sampled_from(["relu", "leakyrelu", "silu", None]))), d, h
    if kind == "concat":
        wa, wb, cout = draw(WIDTH), draw(WIDTH), draw(WIDTH)
        return ("concat", wa, wb, draw(st.sampled_from([1, 3])), cout), cout, h
    if kind == "split":
        if c % 2 == 0 and draw(st.booleans()):
            sizes = (c // 2, c // 2)
        else:
            s = draw(st.integers(1, c - 1))
            sizes = (s, c - s)
        merge = draw(st.sampled_from(["concat", "add"]))
        wa = draw(WIDTH)
        wb = wa if merge == "add" else draw(WIDTH)
        return ("split", sizes, wa, wb, merge), (wa if merge == "add" else wa + wb), h
    if kind == "slice":
        start = draw(st.integers(0, c - 1))
        end = draw(st.integers(start + 1, c))
        return ("slice", start, end), end - start, h
    if kind == "se":
        return ("se", draw(st.integers(1, max(1, c // 2)))), c, h
    if kind == "pool":
        modes = ["same"] + (["down"] if h >= 4 and h % 2 == 0 else [])
        mode = draw(st.sampled_from(modes))
        return ("pool", draw(st.sampled_from(["MaxPool", "AveragePool"])), mode), c, (h // 2 if mode == "down" else h)
    raise AssertionError(kind)


@st.composite
def specs(draw, max_blocks: int = 5) -> dict:
    c0 = draw(st.integers(3, 8))
    h0 = draw(st.sampled_from([4, 6, 8]))
    seed = draw(st.integers(0, 2**16))
    # a stem conv first, so every model has at least one conv that feeds something
    stem_out = draw(WIDTH)
    blocks = [("conv", draw(st.sampled_from([1, 3])), stem_out, draw(st.booleans()), draw(st.sampled_from(ACTS)))]
    c, h = stem_out, h0
    for _ in range(draw(st.integers(1, max_blocks))):
        b, c, h = _draw_block(draw, c, h)
        blocks.append(b)
    head_kind = draw(st.sampled_from(["gap_gemm", "flat_gemm", "reshape_matmul", "conv_out"]))
    nout = draw(st.integers(1, 5))
    if head_kind in ("gap_gemm", "flat_gemm"):
        head = (head_kind, nout, draw(st.booleans()))
    elif head_kind == "reshape_matmul":
        head = (head_kind, draw(st.sampled_from(["flat", "zero"])), nout)
    else:
        head = (head_kind, draw(st.sampled_from([1, 3])), nout)
    return {"c": c0, "h": h0, "seed": seed, "blocks": blocks, "head": head}
