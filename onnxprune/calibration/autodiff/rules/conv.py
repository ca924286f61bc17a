"""Convolutions. The input gradient of a Conv is the transposed convolution with the same
weight. With unit strides it is emitted as a plain Conv with the group-transposed,
spatially flipped kernel and pads (k-1)*d - p: in ORT CPU that runs at the forward conv's
speed (depthwise 3x3 on 96x56x56: 2-5x faster than ConvTranspose with group=C) and keeps
ORT's blocked-layout chain of convs. With strides > 1 it is a ConvTranspose (faster there
than the zero-insertion or polyphase Conv rewrites, which pay for the interleaving). The
kernel transforms read the weight tensor, so ORT folds them once at session start (when
the weight is an initializer). Weight gradients: :mod:`.conv_weight`."""

from __future__ import annotations

import math

from ..ops import attr, reduce, reshape, transpose
from . import NoRule, register
from .conv_weight import weight_grad

INT64_MIN = -(2**63)


def conv_geometry(node, b, x: str, k: list[int]):
    """(strides, dilations, pads begin, pads end), auto_pad made explicit."""
    sp = len(k)
    strides = list(attr(node, "strides", [1] * sp))
    dil = list(attr(node, "dilations", [1] * sp))
    auto = attr(node, "auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pads = list(attr(node, "pads", [0] * 2 * sp))
        return strides, dil, pads[:sp], pads[sp:]
    if auto == "VALID":
        return strides, dil, [0] * sp, [0] * sp
    xs = b.shape(x)[2:]
    pb, pe = [], []
    for i in range(sp):
        total = max(0, (math.ceil(xs[i] / strides[i]) - 1) * strides[i] + (k[i] - 1) * dil[i] + 1 - xs[i])
        small = total // 2
        pb.append(small if auto == "SAME_UPPER" else total - small)
        pe.append(total - pb[-1])
    return strides, dil, pb, pe


def transposed_kernel(b, w: str, wshape: list[int], group: int) -> str:
    """[M, C/g, k...] -> [C, M/g, k...], spatially flipped: the kernel whose stride-1 Conv
    is the adjoint of the Conv with ``w``."""
    m, cg, k = wshape[0], wshape[1], wshape[2:]
    sp = len(k)
    if group == 1:
        wt = transpose(b, w, [1, 0] + list(range(2, 2 + sp)), hint="wT")
    elif m == group and cg == 1:  # depthwise: nothing to transpose
        wt = w
    else:
        r = reshape(b, w, [group, m // group, cg] + k, hint="wg")
        r = transpose(b, r, [0, 2, 1] + list(range(3, 3 + sp)), hint="wgT")
        wt = reshape(b, r, [cg * group, m // group] + k, hint="wT")
    if any(d > 1 for d in k):
        wt = b.op("Slice", [wt, b.ints([-1] * sp), b.ints([INT64_MIN] * sp), b.ints(range(2, 2 + sp)),
                            b.ints([-1] * sp)], hint="wflip")
    return wt


def conv_input_grad(b, g: str, w: str, wshape, group, strides, dil, pb, pe, xshape, yshape, wt=None) -> str:
    """dL/dx of y = Conv(x, w) (any group) given g = dL/dy; ``wt``: the transposed kernel
    when already at hand."""
    k = list(wshape[2:])
    sp = len(k)
    x, y = xshape[2:], yshape[2:]
    pe = list(pe)
    out_pad = []
    for i in range(sp):
        op = x[i] - ((y[i] - 1) * strides[i] - pb[i] - pe[i] + (k[i] - 1) * dil[i] + 1)
        if op < 0:  # windows past the end (ceil_mode): crop them away
            pe[i] -= op
            op = 0
        out_pad.append(op)
    ext = [(k[i] - 1) * dil[i] for i in range(sp)]
    if all(s == 1 for s in strides) and all(pb[i] <= ext[i] and pe[i] <= ext[i] for i in range(sp)):
        wt = wt or transposed_kernel(b, w, list(wshape), group)
        pads = [ext[i] - pb[i] for i in range(sp)] + [ext[i] - pe[i] + out_pad[i] for i in range(sp)]
        return b.op("Conv", [g, wt], hint="dconv", group=group, dilations=dil, pads=pads, kernel_shape=k)
    return b.op("ConvTranspose", [g, w], hint="dconv", group=group, strides=strides, dilations=dil,
                pads=list(pb) + list(pe), output_padding=out_pad if any(out_pad) else None, kernel_shape=k)


def _bias_grad(b, g: str, rank: int) -> str:
    return reduce(b, "ReduceSum", g, [0] + list(range(2, rank)), keepdims=False, hint="dbias")


@register("Conv")
def conv(node, b, gy, needs):
    x, w = node.input[0], node.input[1]
    g, out = gy[0], {}
    xshape, wshape, yshape = b.shape(x), b.shape(w), b.shape(node.output[0])
    group = attr(node, "group", 1)
    strides, dil, pb, pe = conv_geometry(node, b, x, wshape[2:])
    if needs[0]:
        out[0] = conv_input_grad(b, g, w, wshape, group, strides, dil, pb, pe, xshape, yshape)
    if needs[1]:
        out[1] = weight_grad(b, x, g, xshape, wshape, yshape, group, strides, dil, pb, pe)
    if len(needs) > 2 and needs[2]:
        out[2] = _bias_grad(b, g, len(yshape))
    return out


def _transpose_geometry(node, b, x, xshape, yshape, k):
    auto = attr(node, "auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto not in ("NOTSET", "", "VALID") or attr(node, "output_shape") is not None:
        raise NoRule("auto_pad SAME or output_shape: the runtime's padding split is not explicit")
    strides, dil, pb, pe = conv_geometry(node, b, x, k)
    for i in range(len(k)):
        if (yshape[2 + i] + pb[i] + pe[i] - (k[i] - 1) * dil[i] - 1) // strides[i] + 1 != xshape[2 + i]:
            raise NoRule("output size does not match the geometry")
    return strides, dil, pb, pe


@register("ConvTranspose")
def conv_transpose(node, b, gy, needs):
    """y = ConvTranspose(x, w) is the adjoint of x' = Conv(y', w) with the same weight,
    geometry and group: <g, ConvTranspose(x, w)> = <Conv(g, w), x>. So dx = Conv(g, w) (rows
    added by output_padding are read by no input), and dw is the Conv weight gradient with
    g as the conv input and x as its output gradient."""
    x, w = node.input[0], node.input[1]
    g, out = gy[0], {}
    xshape, wshape, yshape = b.shape(x), b.shape(w), b.shape(node.output[0])
    k = wshape[2:]
    group = attr(node, "group", 1)
    if needs[0] or needs[1]:
        strides, dil, pb, pe = _transpose_geometry(node, b, x, xshape, yshape, k)
    if needs[0]:
        out[0] = b.op("Conv", [g, w], hint="dconvT", group=group, strides=strides,
                      dilations=dil, pads=list(pb) + list(pe), kernel_shape=list(k))
    if needs[1]:
        out[1] = weight_grad(b, g, x, yshape, wshape, xshape, group, strides, dil, pb, pe)
    if len(needs) > 2 and needs[2]:
        out[2] = _bias_grad(b, g, len(yshape))
    return out
