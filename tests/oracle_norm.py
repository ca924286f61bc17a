"""The dead-channel oracle for groups that norms reduce over (the hidden size of a
transformer with ``prune_norm_spaces``).

Zeroing a channel's consumer weights is not enough there: the channel still counts in
every LayerNorm/RMSNorm statistic. So the reference zeroes *every* member slice of the
removed channels (embedding columns, projection columns and biases, norm gamma/beta), which
makes the channels exactly zero everywhere, and replaces each norm statistic over the
space by the same statistic over the live channels only (masked sums divided by the live
count). Pruning must then reproduce that reference exactly: a wrong index map, axis,
missed member or unrewritten reshape shows up as a mismatch.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.analysis.spaces import map_length, map_spaces
from onnxprune.plan import Plan
from onnxprune.runtime import session
from onnxprune.shapes import infer_shapes
from onnxprune.surgery import apply_plan
from onnxprune.weights import WeightStore
from tests.oracle import choose_removed, dead_positions

MS = "com.microsoft"


def with_head(model: onnx.ModelProto, classes: int = 10) -> onnx.ModelProto:
    """The model with a linear head on its (single) hidden-state output, so the hidden size
    no longer reaches a graph output: the embedding table transposed when the model has one
    (a tied LM head, the same initializer read twice), else a random [hidden, classes]."""
    model = copy.deepcopy(model)
    graph = model.graph
    out = graph.output[0].name
    inits = {t.name: t for t in graph.initializer}
    table = next((n.input[0] for n in graph.node if n.op_type == "Gather" and n.input[0] in inits
                  and len(inits[n.input[0]].dims) == 2), None)
    dims = [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    hidden = infer_shapes(model)[out][-1]
    if table is not None:
        classes = inits[table].dims[0]
        graph.node.append(helper.make_node("Transpose", [table], ["lm_head_weight"], perm=[1, 0], name="lm_head_T"))
        weight = "lm_head_weight"
    else:
        w = np.random.default_rng(3).standard_normal((hidden, classes)).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(w, "head_weight"))
        weight = "head_weight"
    graph.node.append(helper.make_node("MatMul", [out, weight], ["logits"], name="head"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, dims[:-1] + [classes]))
    return model


def _dead_of(analysis, group, removed):
    by_root = dict(zip(group.roots, removed))
    return lambda space: by_root.get(analysis.table.find(space), [])


def _in_group(analysis, group, amap) -> bool:
    roots = set(group.roots)
    return amap is not None and any(analysis.table.find(s) in roots for s in map_spaces(amap))


def masked_reference(analysis, group, removed) -> onnx.ModelProto:
    model = copy.deepcopy(analysis.model)
    store = WeightStore(model.graph)
    dead_of = _dead_of(analysis, group, removed)
    for m in group.members:
        w = store.get(m.tensor).copy()
        idx = [slice(None)] * w.ndim
        idx[m.axis] = dead_positions(m.amap, dead_of)
        w[tuple(idx)] = 0
        store.set(m.tensor, w)
    ctx = analysis.ctx
    nodes, extra = [], []
    for node in model.graph.node:
        x = node.input[0] if node.input else ""
        r = ctx.rank(x)
        rep = None
        if node.op_type == "LayerNormalization" and r is not None:
            amap = ctx.amap(x, r - 1)
            if _in_group(analysis, group, amap):
                assert _attr(node, "axis", -1) in (-1, r - 1), "oracle: LayerNormalization over several axes"
                rep = _masked_layer_norm(node, _mask(amap, dead_of), extra)
        elif node.op_type in ("SkipLayerNormalization", "EmbedLayerNormalization") and node.domain == MS:
            out = node.output[0]
            amap = ctx.amap(out, (ctx.rank(out) or 3) - 1)
            if _in_group(analysis, group, amap):
                build = _masked_skip_ln if node.op_type == "SkipLayerNormalization" else _masked_embed_ln
                rep = build(node, _mask(amap, dead_of), extra)
        elif node.op_type == "ReduceMean" and r is not None:
            axes = _axes(node, store, r)
            maps = [ctx.amap(x, a) for a in axes]
            hit = [a for a, m in zip(axes, maps) if _in_group(analysis, group, m)]
            if hit:
                assert len(hit) == 1, "oracle: ReduceMean over several channel axes"
                a = hit[0]
                rep = _masked_mean(node, _mask(ctx.amap(x, a), dead_of), a, r, axes, extra)
        nodes.extend(rep or [node])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(extra)
    return model


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _axes(node, store, r):
    axes = _attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = store.get(node.input[1]).reshape(-1).tolist()
    axes = list(range(r)) if not axes else axes
    return sorted(a + r if a < 0 else a for a in axes)


def _mask(amap, dead_of) -> np.ndarray:
    mask = np.ones(map_length(amap), dtype=np.float32)
    mask[dead_positions(amap, dead_of)] = 0
    return mask


def _const(extra, name, value) -> str:
    extra.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def _masked_mean(node, mask, axis, r, axes, extra):
    p = node.name
    m = _const(extra, f"{p}_mask", mask.reshape([-1] + [1] * (r - 1 - axis)))
    n = _const(extra, f"{p}_live", np.float32(mask.sum()))
    ax = _const(extra, f"{p}_axes", np.array(axes, dtype=np.int64))
    keep = _attr(node, "keepdims", 1)
    return [helper.make_node("Mul", [node.input[0], m], [f"{p}_xm"]),
            helper.make_node("ReduceSum", [f"{p}_xm", ax], [f"{p}_sum"], keepdims=keep),
            helper.make_node("Div", [f"{p}_sum", n], [node.output[0]])]


def _masked_layer_norm(node, mask, extra, x=None, gamma=None, beta=None, y=None, p=None):
    """LayerNorm over the last axis with statistics of the live positions only (gamma and
    beta default to the node's inputs 1 and 2)."""
    p = p or node.name
    m = _const(extra, f"{p}_mask", mask)
    n = _const(extra, f"{p}_live", np.float32(mask.sum()))
    eps = _const(extra, f"{p}_eps", np.float32(_attr(node, "epsilon", 1e-5)))
    ax = _const(extra, f"{p}_axes", np.array([-1], dtype=np.int64))
    x = x or node.input[0]
    gamma = gamma or node.input[1]
    if beta is None:
        beta = node.input[2] if len(node.input) > 2 and node.input[2] else None
    y = y or node.output[0]
    out = [helper.make_node("Mul", [x, m], [f"{p}_xm"]),
           helper.make_node("ReduceSum", [f"{p}_xm", ax], [f"{p}_s"], keepdims=1),
           helper.make_node("Div", [f"{p}_s", n], [f"{p}_mean"]),
           helper.make_node("Sub", [x, f"{p}_mean"], [f"{p}_c"]),
           helper.make_node("Mul", [f"{p}_c", m], [f"{p}_d"]),
           helper.make_node("Mul", [f"{p}_d", f"{p}_d"], [f"{p}_d2"]),
           helper.make_node("ReduceSum", [f"{p}_d2", ax], [f"{p}_v"], keepdims=1),
           helper.make_node("Div", [f"{p}_v", n], [f"{p}_var"]),
           helper.make_node("Add", [f"{p}_var", eps], [f"{p}_ve"]),
           helper.make_node("Sqrt", [f"{p}_ve"], [f"{p}_std"]),
           helper.make_node("Div", [f"{p}_d", f"{p}_std"], [f"{p}_n"]),
           helper.make_node("Mul", [f"{p}_n", gamma], [f"{p}_g" if beta else y])]
    if beta:
        out.append(helper.make_node("Add", [f"{p}_g", beta], [y]))
    return out


def _in(node, i):
    return node.input[i] if len(node.input) > i else ""


def _masked_skip_ln(node, mask, extra):
    """ORT SkipLayerNormalization: s = input + skip (+ bias), its 4th output; LayerNorm(s)."""
    p = node.name
    s = node.output[3] if len(node.output) > 3 and node.output[3] else f"{p}_sum"
    nodes = [helper.make_node("Add", [node.input[0], node.input[1]], [f"{p}_s0" if _in(node, 4) else s])]
    if _in(node, 4):
        nodes.append(helper.make_node("Add", [f"{p}_s0", node.input[4]], [s]))
    return nodes + _masked_layer_norm(node, mask, extra, x=s, gamma=node.input[2], beta=_in(node, 3) or "",
                                      y=node.output[0])


def _masked_embed_ln(node, mask, extra):
    """ORT EmbedLayerNormalization: word[ids] + position[0..S) (or position_ids) +
    segment[segment_ids], then LayerNorm. The original node stays for its mask_index."""
    p = node.name
    kept = helper.make_node(node.op_type, list(node.input), [f"{p}_unused"] + list(node.output[1:2]), domain=MS,
                            name=p)
    kept.attribute.extend(node.attribute)
    one = _const(extra, f"{p}_one", np.array([1], dtype=np.int64))
    zero = _const(extra, f"{p}_zero", np.array(0, dtype=np.int64))
    step = _const(extra, f"{p}_step", np.array(1, dtype=np.int64))
    nodes = [kept, helper.make_node("Gather", [node.input[2], node.input[0]], [f"{p}_word"])]
    if _in(node, 8):
        pos_ids = node.input[8]
    else:
        nodes += [helper.make_node("Shape", [node.input[0]], [f"{p}_shape"]),
                  helper.make_node("Gather", [f"{p}_shape", one], [f"{p}_len1"]),
                  helper.make_node("Squeeze", [f"{p}_len1"], [f"{p}_len"]),
                  helper.make_node("Range", [zero, f"{p}_len", step], [f"{p}_pos_ids"])]
        pos_ids = f"{p}_pos_ids"
    nodes += [helper.make_node("Gather", [node.input[3], pos_ids], [f"{p}_pos"]),
              helper.make_node("Add", [f"{p}_word", f"{p}_pos"], [f"{p}_wp"])]
    total = f"{p}_wp"
    if _in(node, 1) and _in(node, 4):
        nodes += [helper.make_node("Gather", [node.input[4], node.input[1]], [f"{p}_seg"]),
                  helper.make_node("Add", [total, f"{p}_seg"], [f"{p}_emb"])]
        total = f"{p}_emb"
    if len(node.output) > 2 and node.output[2]:
        nodes.append(helper.make_node("Identity", [total], [node.output[2]]))
    return nodes + _masked_layer_norm(node, mask, extra, x=total, gamma=node.input[5], beta=_in(node, 6) or "",
                                      y=node.output[0])


def check_norm_group(analysis, group, feeds, seed=0, rtol=1e-5):
    """Prune the chosen channels of ``group`` and compare with :func:`masked_reference`."""
    removed = choose_removed(group, seed)
    reference = masked_reference(analysis, group, removed)
    keep = [[i for i in range(group.size) if i not in set(r)] for r in removed]
    pruned = apply_plan(analysis, Plan("test", {group.id: {"size": group.size, "keep": keep}}, {}))
    ref = session(reference).run(None, feeds)
    out = session(pruned).run(None, feeds)
    for a, b in zip(ref, out):
        assert a.shape == b.shape
        err = float(np.abs(a - b).max()) / max(float(np.abs(a).max()), 1e-6)
        assert err <= rtol, f"group {group.id} ({group.name}): relative error {err:.3g}"
    return pruned, reference
