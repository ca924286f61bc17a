"""Gemm, MatMul (batched, broadcast, 1-D operands) and two-operand Einsum."""

from __future__ import annotations

import math

from ..ops import attr, broadcast_shape, reshape, scale, transpose, unbroadcast
from . import NoRule, register


@register("Gemm")
def gemm(node, b, gy, needs):
    """Y = alpha * A' B' + beta * C with A' = A or A^T, B' = B or B^T."""
    a, bb = node.input[0], node.input[1]
    ta, tb = attr(node, "transA", 0), attr(node, "transB", 0)
    alpha, beta = attr(node, "alpha", 1.0), attr(node, "beta", 1.0)
    g, out = gy[0], {}
    if needs[0]:  # dA' = alpha g B'^T
        if ta:
            out[0] = b.op("Gemm", [bb, g], hint="dA", alpha=alpha, transA=tb, transB=1)
        else:
            out[0] = b.op("Gemm", [g, bb], hint="dA", alpha=alpha, transB=1 - tb)
    if needs[1]:  # dB' = alpha A'^T g
        if tb:
            out[1] = b.op("Gemm", [g, a], hint="dB", alpha=alpha, transA=1, transB=ta)
        else:
            out[1] = b.op("Gemm", [a, g], hint="dB", alpha=alpha, transA=1 - ta)
    if len(needs) > 2 and needs[2]:
        out[2] = unbroadcast(b, scale(b, g, beta), b.shape(node.output[0]), b.shape(node.input[2]))
    return out


def _swap_last(b, x: str, rank: int) -> str:
    return transpose(b, x, list(range(rank - 2)) + [rank - 1, rank - 2], hint="mT")


@register("MatMul")
def matmul(node, b, gy, needs):
    a, bb = node.input[0], node.input[1]
    sa, sb, sy = b.shape(a), b.shape(bb), b.shape(node.output[0])
    g, out = gy[0], {}
    # 1-D operands as matrices: a [k] -> [1, k], b [k] -> [k, 1]
    a2, sa2 = (reshape(b, a, [1] + sa), [1] + sa) if len(sa) == 1 else (a, sa)
    b2, sb2 = (reshape(b, bb, sb + [1]), sb + [1]) if len(sb) == 1 else (bb, sb)
    batch = broadcast_shape(sa2[:-2], sb2[:-2])
    sy2 = batch + [sa2[-2], sb2[-1]]
    g2 = reshape(b, g, sy2) if sy2 != sy else g
    if needs[0]:
        da = b.op("MatMul", [g2, _swap_last(b, b2, len(sb2))], hint="dA")
        da = unbroadcast(b, da, batch + sa2[-2:], sa2)
        out[0] = reshape(b, da, sa) if len(sa) == 1 else da
    if needs[1]:
        if len(sb2) == 2 and len(sa2) > 2:  # weight-like B: fold A's batch into the rows
            rows = math.prod(sa2[:-1])
            af, gf = reshape(b, a2, [rows, sa2[-1]]), reshape(b, g2, [rows, sb2[-1]])
            db = b.op("Gemm", [af, gf], hint="dB", transA=1)
        else:
            db = b.op("MatMul", [_swap_last(b, a2, len(sa2)), g2], hint="dB")
            db = unbroadcast(b, db, batch + sb2[-2:], sb2)
        out[1] = reshape(b, db, sb) if len(sb) == 1 else db
    return out


def _parse_einsum(eq: str):
    eq = eq.replace(" ", "")
    if "..." in eq or "->" not in eq:
        return None
    lhs, rhs = eq.split("->")
    terms = lhs.split(",")
    if any(len(set(t)) != len(t) for t in terms + [rhs]):
        return None  # diagonals
    return terms, rhs


@register("Einsum")
def einsum(node, b, gy, needs):
    """Two operands without ellipsis or repeated letters: d op_k = einsum(out, other -> op_k)
    when every letter of op_k appears in the output or the other operand."""
    eq = attr(node, "equation", "")
    eq = eq.decode() if isinstance(eq, bytes) else eq
    parsed = _parse_einsum(eq)
    if parsed is None or len(parsed[0]) != 2:
        raise NoRule(f"equation '{eq}' is not a simple two-operand contraction")
    (t0, t1), rhs = parsed
    out = {}
    for k, (mine, other) in enumerate(((t0, t1), (t1, t0))):
        if not needs[k]:
            continue
        if any(c not in rhs and c not in other for c in mine):
            raise NoRule(f"operand {k} has letters summed out on their own")
        out[k] = b.op("Einsum", [gy[0], node.input[1 - k]], hint="dein", equation=f"{rhs},{other}->{mine}")
    return out
