"""Pooling and nearest Resize.

- MaxPool: the forward node is given its Indices output when it has none (flat positions
  in the whole input; the forward result is unchanged), and the output gradient is
  scattered there: ScatterElements with ``reduction='add'`` from opset 16; before, one
  scatter (distinct indices, no reduction needed) per phase of outputs whose windows
  cannot overlap, summed.
- GlobalMaxPool: ArgMax over the flattened window (first maximum), then a scatter.
- AveragePool: the gradient divided by each window's divisor, then the transposed
  depthwise conv with a ones kernel (see conv.py); non-overlapping windows are an
  Expand instead.
- Resize (nearest): the per-axis source index map is computed like the runtime does; the
  gradient is a block sum (integer factors) or a one-hot MatMul along the last two axes.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import onnx

from ..ops import attr, reduce, reshape, slice_
from . import NoRule, only, register
from .conv import conv_geometry, conv_input_grad


@register("GlobalAveragePool")
def global_average_pool(node, b, gy, needs):
    xs = b.shape(node.input[0])
    g = b.op("Mul", [gy[0], b.scalar(1.0 / math.prod(xs[2:]), gy[0])])
    return {0: b.op("Expand", [g, b.ints(xs)], hint="dgap")}


def _scatter(b, data_shape, like, indices, updates, axis, reduction=None) -> str:
    zeros = b.zeros(data_shape, like)
    return b.op("ScatterElements", [zeros, indices, updates], hint="scat", axis=axis, reduction=reduction)


@register("GlobalMaxPool")
def global_max_pool(node, b, gy, needs):
    x = node.input[0]
    xs = b.shape(x)
    flat = xs[:2] + [math.prod(xs[2:])]
    idx = b.op("ArgMax", [reshape(b, x, flat)], hint="argmax", axis=2, keepdims=1)
    g = reshape(b, gy[0], xs[:2] + [1])
    return {0: reshape(b, _scatter(b, flat, x, idx, g, axis=2), xs, hint="dgmp")}


@register("MaxPool")
def max_pool(node, b, gy, needs):
    if len(gy) > 1 and gy[1] is not None:
        raise NoRule("gradient through Indices")
    if attr(node, "storage_order", 0):
        raise NoRule("column-major Indices")
    x = node.input[0]
    xs, ys = b.shape(x), b.shape(node.output[0])
    k = list(attr(node, "kernel_shape"))
    sp = len(k)
    strides, dil, _, _ = conv_geometry(node, b, x, k)
    # outputs whose positions differ by a multiple of m along every axis have disjoint windows
    m = [math.ceil(((kk - 1) * d + 1) / s) for kk, d, s in zip(k, dil, strides)]
    idx = b.forward_output(node, 1, "maxpool_idx", onnx.TensorProto.INT64)
    n = math.prod(xs)
    if all(v == 1 for v in m) or b.opset >= 16:
        scat = _scatter(b, [n], x, reshape(b, idx, [-1]), reshape(b, gy[0], [math.prod(ys)]), axis=0,
                        reduction=None if all(v == 1 for v in m) else "add")
        return {0: reshape(b, scat, xs, hint="dmaxpool")}
    parts = []  # before opset 16 (no reduction='add'): one scatter per phase, then a Sum
    for phase in itertools.product(*[range(v) for v in m]):
        if any(p >= ys[2 + a] for a, p in enumerate(phase)):
            continue
        axes, big = list(range(2, 2 + sp)), [ys[2 + a] for a in range(sp)]
        pi = slice_(b, idx, phase, big, axes, m, hint="mpi")
        pg = slice_(b, gy[0], phase, big, axes, m, hint="mpg")
        count = math.prod(ys[:2]) * math.prod(len(range(p, ys[2 + a], m[a])) for a, p in enumerate(phase))
        parts.append(_scatter(b, [n], x, reshape(b, pi, [count]), reshape(b, pg, [count]), axis=0))
    total = parts[0] if len(parts) == 1 else b.op("Sum", parts, hint="mpsum")
    return {0: reshape(b, total, xs, hint="dmaxpool")}


def _average_divisors(x: int, y: int, k: int, s: int, pb: int, pe: int, include_pad: bool) -> np.ndarray:
    """Per output position along one axis, the window size the runtime divides by."""
    out = np.empty(y)
    for o in range(y):
        start = o * s - pb
        end = min(start + k, x + pe)
        size = end - start
        valid = min(end, x) - max(start, 0)
        out[o] = size if include_pad else valid
    return out


@register("AveragePool")
def average_pool(node, b, gy, needs):
    x = node.input[0]
    xs, ys = b.shape(x), b.shape(node.output[0])
    k = list(attr(node, "kernel_shape"))
    sp = len(k)
    strides, dil, pb, pe = conv_geometry(node, b, x, k)
    if any(d != 1 for d in dil):
        raise NoRule("dilated AveragePool")
    include = bool(attr(node, "count_include_pad", 0))
    g = gy[0]
    plain = not any(pb) and not any(pe) and strides == k and all(ys[2 + i] * k[i] <= xs[2 + i] for i in range(sp))
    if plain:  # non-overlapping windows: every input of a window gets g / prod(k)
        g = b.op("Mul", [g, b.scalar(1.0 / math.prod(k), g)])
        inter = [v for i in range(sp) for v in (ys[2 + i], 1)]
        full = [v for i in range(sp) for v in (ys[2 + i], k[i])]
        e = b.op("Expand", [reshape(b, g, ys[:2] + inter), b.ints(ys[:2] + full)], hint="dap")
        e = reshape(b, e, ys[:2] + [ys[2 + i] * k[i] for i in range(sp)])
        ends = [0, 0] + [xs[2 + i] - ys[2 + i] * k[i] for i in range(sp)]
        if any(ends):
            e = b.op("Pad", [e, b.ints([0] * (sp + 2) + ends)], hint="dap", mode="constant")
        return {0: e}
    div = np.ones([1, 1] + ys[2:])
    for i in range(sp):
        d = _average_divisors(xs[2 + i], ys[2 + i], k[i], strides[i], pb[i], pe[i], include)
        div = div * d.reshape([1, 1] + [-1 if j == i else 1 for j in range(sp)])
    g = b.op("Mul", [g, b.const(1.0 / div, b.elem(g), hint="invdiv")])
    c = xs[1]
    ones = b.const(np.ones([c, 1] + k), b.elem(g), hint="ones")
    return {0: conv_input_grad(b, g, ones, [c, 1] + k, c, strides, [1] * sp, pb, pe, xs, ys, wt=ones)}


# ---- Resize (nearest) -------------------------------------------------------------------


def _source_index(mode: str, nearest: str, o: np.ndarray, scale: float, n_in: int, n_out: int) -> np.ndarray:
    if mode == "half_pixel":
        src = (o + 0.5) / scale - 0.5
    elif mode == "pytorch_half_pixel":
        src = (o + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(o, dtype=float)
    elif mode == "align_corners":
        src = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(o, dtype=float)
    elif mode == "asymmetric":
        src = o / scale
    elif mode == "tf_half_pixel_for_nn":
        src = (o + 0.5) / scale
    else:
        raise NoRule(f"coordinate_transformation_mode '{mode}'")
    src = src.astype(np.float32).astype(np.float64)  # the runtime computes in float
    if nearest == "floor":
        idx = np.floor(src)
    elif nearest == "ceil":
        idx = np.ceil(src)
    elif nearest == "round_prefer_ceil":
        idx = np.floor(src + 0.5)
    else:  # round_prefer_floor
        idx = np.where(src - np.floor(src) == 0.5, np.floor(src), np.round(src))
    return np.clip(idx, 0, n_in - 1).astype(np.int64)


def _text(node, name, default):
    v = attr(node, name, default)
    return v.decode() if isinstance(v, bytes) else v


@register("Resize")
def resize(node, b, gy, needs):
    only(needs, 0, what="Resize roi/scales/sizes")
    if _text(node, "mode", "nearest") != "nearest":
        raise NoRule(f"mode '{_text(node, 'mode', 'nearest')}' (only nearest has a rule)")
    x = node.input[0]
    xs, ys = b.shape(x), b.shape(node.output[0])
    r = len(xs)
    axes = [a + r if a < 0 else a for a in attr(node, "axes", list(range(r)))]
    scales = b.need_value(node.input[2], "Resize scales") if len(node.input) > 2 and node.input[2] else None
    scales = None if scales is None or scales.size == 0 else [float(v) for v in scales.reshape(-1)]
    if _text(node, "keep_aspect_ratio_policy", "stretch") != "stretch" and scales is None:
        raise NoRule("keep_aspect_ratio_policy")
    mode = _text(node, "coordinate_transformation_mode", "half_pixel")
    nearest = _text(node, "nearest_mode", "round_prefer_floor")
    maps = {}
    for j, a in enumerate(axes):
        s = scales[j] if scales is not None else ys[a] / xs[a]
        m = _source_index(mode, nearest, np.arange(ys[a]), s, xs[a], ys[a])
        if not np.array_equal(m, np.arange(ys[a])):
            maps[a] = m
    g = gy[0]
    if not maps:
        return {0: g}
    factors = {a: ys[a] // xs[a] for a in maps}
    if all(ys[a] == xs[a] * f and np.array_equal(m, np.arange(ys[a]) // f) for a, m in maps.items()
           for f in [factors[a]]):  # integer blocks: a sum over each block
        split, pos = [], []
        for a in range(r):
            split += [xs[a], factors[a]] if a in maps else [ys[a]]
            if a in maps:
                pos.append(len(split) - 1)
        return {0: reduce(b, "ReduceSum", reshape(b, g, split), pos, keepdims=False, hint="dresize")}
    if any(a < r - 2 for a in maps):
        raise NoRule("nearest resize with non-integer factors on a leading axis")
    dt = b.elem(g)
    if r - 1 in maps:  # g [.., out] @ onehot [out, in]
        g = b.op("MatMul", [g, b.const(np.eye(xs[r - 1])[maps[r - 1]], dt, hint="onehot")], hint="dresize")
    if r - 2 in maps:  # onehot^T [in, out] @ g [.., out, W]
        g = b.op("MatMul", [b.const(np.eye(xs[r - 2])[maps[r - 2]].T, dt, hint="onehot"), g], hint="dresize")
    return {0: g}
