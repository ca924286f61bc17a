"""Conv weight gradients: dW[m, c, k] = sum_{n, o} g[n, m, o] xpad[n, G(m) Cg + c, o s + k d].

Several formulations; :func:`pick` chooses per case from ORT CPU timings on MobileNetV2
shapes at batch 16 (``scripts/bench_weight_grads.py``; times relative to the forward conv,
measured on a shared 2-core machine, so +-30%):

- ``matmul`` (1x1 without padding, any stride and group): x on the output grid, then per
  sample (and group) g [Mg, P] x^T [P, Cg] (ORT fuses the transpose into the MatMul),
  summed over the batch: 0.3-0.7x from 14x14 up;
- ``gemm`` (1x1, one group): the batch folded into the contraction, [M, N P] [N P, C]; at
  7x7 1.4-1.6x where ``matmul`` (short per-sample products) takes 2.2-2.5x;
- ``rows`` (depthwise 2-D, input width <= 32): channel-major, per kernel row one MatMul
  over (sample, output row) pairs every output column with every input column; the taps
  are diagonals of it: 3-7x where ``im2col`` takes 6-25x (its wasted products grow with
  the width: 5-11x from 56 up, where ``im2col`` takes 3-6x);
- ``im2col`` (anything else up to 7x7 kernels): the patches by a one-hot depthwise Conv,
  [N, C T, P], contracted with g by one MatMul: 1.5-2.6x for full 3x3 convs, 3-6x for
  wide depthwise ones (writing and reading the 9x patches is the cost);
- ``conv`` (kernels over 49 taps, whose patches would be large): the input channels are
  the batch and g the kernel, Conv(x^T [Cg, G N, S], g^T [M, N, So], group=G, strides=d,
  dilations=s), cropped and transposed back: 3.5-30x (ORT's im2col for a kernel as large
  as the image and a 3x3 output is slow);
- ``taps`` (depthwise): per tap a strided slice of the padded input times g, summed:
  8-23x; kept for the comparison, never picked.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..ops import pad, reduce, reshape, slice_, transpose

METHODS = ("matmul", "gemm", "rows", "im2col", "conv", "taps")


def pick(xshape, wshape, yshape, group: int, pb, pe) -> str:
    k, cg = list(wshape[2:]), wshape[1]
    if all(v == 1 for v in k) and not any(pb) and not any(pe):
        return "gemm" if group == 1 and math.prod(yshape[2:]) <= 64 else "matmul"
    if cg == 1 and group > 1 and len(k) == 2 and xshape[-1] <= 32:
        return "rows"
    return "im2col" if math.prod(k) <= 49 else "conv"


def weight_grad(b, x: str, g: str, xshape, wshape, yshape, group: int, strides, dil, pb, pe,
                method: str | None = None) -> str:
    """dL/dw of y = Conv(x, w) (geometry explicit, as from ``conv_geometry``) given g = dL/dy."""
    method = method or pick(xshape, wshape, yshape, group, pb, pe)
    fn = {"matmul": _by_matmul, "gemm": _by_gemm, "rows": _by_rows, "im2col": _by_im2col, "conv": _by_conv,
          "taps": _by_taps}[method]
    return fn(b, x, g, list(xshape), list(wshape), list(yshape), group, list(strides), list(dil), list(pb), list(pe))


def _on_grid(b, x, xshape, yshape, strides, dil, pb, pe, offset):
    """x (padded by pb/pe) at positions o * s + offset * d for every output position o."""
    sp = len(yshape) - 2
    xp = pad(b, x, [0, 0] + list(pb), [0, 0] + list(pe), hint="wxpad")
    padded = [xshape[2 + i] + pb[i] + pe[i] for i in range(sp)]
    starts = [offset[i] * dil[i] for i in range(sp)]
    ends = [starts[i] + (yshape[2 + i] - 1) * strides[i] + 1 for i in range(sp)]
    if starts == [0] * sp and ends == padded and all(s == 1 for s in strides):
        return xp
    return slice_(b, xp, starts, ends, list(range(2, 2 + sp)), strides if any(s > 1 for s in strides) else None,
                  hint="wtap")


def _by_matmul(b, x, g, xshape, wshape, yshape, group, strides, dil, pb, pe):
    n, (m, cg) = xshape[0], wshape[:2]
    p = math.prod(yshape[2:])
    xs = _on_grid(b, x, xshape, yshape, strides, dil, pb, pe, [0] * (len(yshape) - 2))
    lead = [n] if group == 1 else [n, group]
    xr = transpose(b, reshape(b, xs, lead + [cg, p], hint="wx"), list(range(len(lead))) + [len(lead) + 1, len(lead)],
                   hint="wxT")
    gr = reshape(b, g, lead + [m // group, p], hint="wg")
    prod = b.op("MatMul", [gr, xr], hint="wmm")  # [N, (G,) Mg, Cg]
    red = prod if n == 1 else reduce(b, "ReduceSum", prod, [0], keepdims=False, hint="wsum")
    return reshape(b, red, wshape, hint="dW")


def _by_gemm(b, x, g, xshape, wshape, yshape, group, strides, dil, pb, pe):
    """1x1, one group: the batch folded into the contraction, [M, N P] x [N P, C]."""
    n, c, m = xshape[0], xshape[1], wshape[0]
    p = math.prod(yshape[2:])
    xs = _on_grid(b, x, xshape, yshape, strides, dil, pb, pe, [0] * (len(yshape) - 2))
    xf = reshape(b, transpose(b, reshape(b, xs, [n, c, p], hint="wx"), [1, 0, 2], hint="wxT"), [c, n * p], hint="wx")
    gf = reshape(b, transpose(b, reshape(b, g, [n, m, p], hint="wg"), [1, 0, 2], hint="wgT"), [m, n * p], hint="wg")
    return reshape(b, b.op("Gemm", [gf, xf], hint="wgemm", transB=1), wshape, hint="dW")


def _valid(n_out: int, size: int, s: int, off: int) -> tuple[int, int]:
    """The output positions [lo, hi) whose input position o s + off lies in [0, size)."""
    lo = max(0, -(off // s))
    hi = min(n_out, (size - 1 - off) // s + 1) if size - 1 - off >= 0 else 0
    return lo, max(lo, hi)


def _by_rows(b, x, g, xshape, wshape, yshape, group, strides, dil, pb, pe):
    """Depthwise 2-D, channel-major: per kernel row kh, R = g^T x over (n, output row)
    gives [C, Wo, W] for every (output column, input column) pair; the taps are its
    diagonals j s + kw d - pb, read by strided slices of the flattened R."""
    n, c, h, wd = xshape
    m, (kh_n, kw_n) = wshape[0], wshape[2:]
    mult = m // c
    ho, wo = yshape[2:]
    xt = transpose(b, x, [1, 0, 2, 3], hint="wxT")  # [C, N, H, W]
    gt = reshape(b, g, [n, c, mult, ho, wo], hint="wg")
    gt = transpose(b, gt, [1, 0, 3, 2, 4], hint="wgT")  # [C, N, Ho, mult, Wo]
    zero = None
    taps = []
    for kh in range(kh_n):
        i0, i1 = _valid(ho, h, strides[0], kh * dil[0] - pb[0])
        if i1 <= i0:
            zero = zero or b.zeros([c, mult], x)
            taps += [zero] * kw_n
            continue
        rows = i1 - i0
        r0 = i0 * strides[0] + kh * dil[0] - pb[0]
        xs = slice_(b, xt, [r0], [r0 + (rows - 1) * strides[0] + 1], [2], [strides[0]] if strides[0] > 1 else None,
                    hint="wrows") if (r0, rows, strides[0]) != (0, h, 1) else xt
        gs = slice_(b, gt, [i0], [i1], [2], hint="wgrows") if (i0, i1) != (0, ho) else gt
        a = reshape(b, gs, [c, n * rows, mult * wo], hint="wa")
        r = b.op("MatMul", [transpose(b, a, [0, 2, 1], hint="waT"), reshape(b, xs, [c, n * rows, wd], hint="wb")],
                 hint="wR")  # [C, mult Wo, W]
        flat = reshape(b, r, [c, mult, wo * wd], hint="wRf")
        for kw in range(kw_n):
            off = kw * dil[1] - pb[1]
            j0, j1 = _valid(wo, wd, strides[1], off)
            if j1 <= j0:
                zero = zero or b.zeros([c, mult], x)
                taps.append(zero)
                continue
            start = j0 * (wd + strides[1]) + off
            diag = slice_(b, flat, [start], [start + (j1 - j0 - 1) * (wd + strides[1]) + 1], [2], [wd + strides[1]],
                          hint="wdiag")
            taps.append(reduce(b, "ReduceSum", diag, [2], keepdims=False, hint="wtap"))
    stacked = b.op("Concat", [reshape(b, t_, [c, mult, 1], hint="wtap") for t_ in taps], hint="wtaps", axis=2)
    return reshape(b, stacked, wshape, hint="dW")


def _by_im2col(b, x, g, xshape, wshape, yshape, group, strides, dil, pb, pe):
    """The patches of x by a one-hot depthwise Conv, [N, C T, P], then a MatMul with g."""
    n, c, (m, cg), k = xshape[0], xshape[1], wshape[:2], wshape[2:]
    t, p = math.prod(k), math.prod(yshape[2:])
    eye = np.eye(t, dtype=np.float32).reshape([t, 1] + k)
    onehot = b.const(np.tile(eye, [c] + [1] * (1 + len(k))), b.elem(x), hint="onehot")
    col = b.op("Conv", [x, onehot], hint="wcol", group=c, strides=strides, dilations=dil, pads=list(pb) + list(pe),
               kernel_shape=k)  # [N, C T, So], channel c T + tap
    if cg == 1:
        mult = m // c
        colr = reshape(b, col, [n, c, t, p], hint="wcol")
        gr = reshape(b, g, [n, c, mult, p], hint="wg")
        prod = b.op("MatMul", [gr, transpose(b, colr, [0, 1, 3, 2], hint="wcolT")], hint="wmm")  # [N, C, mult, T]
    else:
        colr = reshape(b, col, [n, group, cg * t, p], hint="wcol")
        gr = reshape(b, g, [n, group, m // group, p], hint="wg")
        prod = b.op("MatMul", [gr, transpose(b, colr, [0, 1, 3, 2], hint="wcolT")], hint="wmm")  # [N, G, Mg, Cg T]
    red = prod if n == 1 else reduce(b, "ReduceSum", prod, [0], keepdims=False, hint="wsum")
    return reshape(b, red, wshape, hint="dW")


def _by_conv(b, x, g, xshape, wshape, yshape, group, strides, dil, pb, pe):
    n, cg, k = xshape[0], wshape[1], wshape[2:]
    sp = len(k)
    s_in, so = xshape[2:], yshape[2:]
    space = list(range(2, 2 + sp))
    if group == 1:
        xt = transpose(b, x, [1, 0] + space, hint="wxT")  # [C, N, S]
    else:  # [N, G, Cg, S] -> [Cg, G, N, S] -> [Cg, G N, S]: group G reads channels (G, n)
        xt = reshape(b, x, [n, group, cg] + s_in, hint="wx")
        xt = transpose(b, xt, [2, 1, 0] + [a + 1 for a in space], hint="wxT")
        xt = reshape(b, xt, [cg, group * n] + s_in, hint="wxT")
    gt = transpose(b, g, [1, 0] + space, hint="wgT")  # [M, N, So]
    # output size (S + pb + pe - (So - 1) s - 1) // d + 1 >= k: trim the end padding to fit
    pe_used, extra = [], []
    for i in range(sp):
        over = s_in[i] + pb[i] + pe[i] - (so[i] - 1) * strides[i] - 1 - (k[i] - 1) * dil[i]
        cut = min(over, pe[i])
        pe_used.append(pe[i] - cut)
        extra.append((over - cut) // dil[i])
    r = b.op("Conv", [xt, gt], hint="wconv", group=group, strides=dil, dilations=strides,
             pads=list(pb) + pe_used, kernel_shape=so)  # [Cg, M, k + extra]
    if any(extra):
        r = slice_(b, r, [0] * sp, k, space, hint="wcrop")
    return transpose(b, r, [1, 0] + space, hint="dW")


def _by_taps(b, x, g, xshape, wshape, yshape, group, strides, dil, pb, pe):
    """Cg = 1: channel c of x feeds outputs c * mult ... c * mult + mult - 1."""
    n, c, m, k = xshape[0], xshape[1], wshape[0], wshape[2:]
    mult, sp = m // c, len(k)
    so = yshape[2:]
    if mult > 1:
        g = reshape(b, g, [n, c, mult] + so, hint="wg")
    axes = [0] + list(range(2 + (mult > 1), 2 + (mult > 1) + sp))
    parts = []
    for tap in itertools.product(*[range(v) for v in k]):
        xt = _on_grid(b, x, xshape, yshape, strides, dil, pb, pe, list(tap))
        if mult > 1:
            xt = reshape(b, xt, [n, c, 1] + so, hint="wx")
        parts.append(reduce(b, "ReduceSum", b.op("Mul", [xt, g], hint="wprod"), axes, keepdims=True, hint="wsum"))
    # parts: [1, C, (mult,) 1...] each; stack the taps last
    stacked = parts[0] if len(parts) == 1 else b.op("Concat", parts, hint="wtaps", axis=0)  # [T, C, (mult,) 1..]
    flat = reshape(b, stacked, [len(parts), m], hint="wtaps")
    return reshape(b, transpose(b, flat, [1, 0], hint="wtapsT"), wshape, hint="dW")
