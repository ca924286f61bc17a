"""A tiny graph builder and the checks every rule test shares.

Graphs are built with ``onnx.helper`` (opset 17 unless told, IR version 8 so that the
installed onnxruntime accepts them; 10 for opset 21), weights drawn from ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis import AnalysisOptions, analyze
from onnxprune.weights import WeightStore
from onnxprune.plan import Plan
from onnxprune.runtime import session
from onnxprune.surgery import apply_plan
from tests.oracle import check_group, feeds_for

FLOAT = TensorProto.FLOAT


class G:
    """Collects nodes, initializers and graph inputs/outputs; every node gets a name."""

    def __init__(self, opset: int = 17, seed: int = 0):
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []
        self.outputs: list = []
        self._n = 0

    # ---- tensors --------------------------------------------------------------
    def _fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def input(self, name: str, shape, dtype=FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def output(self, name: str, shape=None, dtype=FLOAT) -> str:
        """A graph output; its shape comes from shape inference unless given."""
        self.outputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def init(self, value, name: str | None = None) -> str:
        name = name or self._fresh("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, shape, name: str | None = None, scale: float = 0.5) -> str:
        value = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        return self.init(value, name or self._fresh("w"))

    def ints(self, values, name: str | None = None) -> str:
        return self.init(np.asarray(values, dtype=np.int64), name)

    def const_node(self, value, name: str | None = None) -> str:
        """A Constant node holding ``value``; returns its output name."""
        out = name or self._fresh("k")
        self.nodes.append(helper.make_node("Constant", [], [out], name=out + "_node",
                                           value=numpy_helper.from_array(np.asarray(value), out + "_value")))
        return out

    # ---- nodes ----------------------------------------------------------------
    def op(self, op_type: str, inputs, name: str | None = None, n_out: int = 1, domain: str = "", **attrs):
        """Add a node; returns its output name (or the list of them when ``n_out > 1``)."""
        name = name or self._fresh(op_type.lower())
        outs = [name] if n_out == 1 else [f"{name}_o{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, domain=domain or None, **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x: str, cin: int, cout: int, name: str | None = None, k: int = 1, group: int = 1,
             bias: bool = False, pad: int | None = None) -> str:
        name = name or self._fresh("conv")
        w = self.weight([cout, cin // group, k, k], name + "_w")
        ins = [x, w] + ([self.weight([cout], name + "_b")] if bias else [])
        p = (k // 2) if pad is None else pad
        return self.op("Conv", ins, name, kernel_shape=[k, k], pads=[p] * 4, group=group)

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "g", self.inputs, self.outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        # IR 8 (what onnxruntime accepts) unless the opset needs newer
        m.ir_version = 8 if self.opset <= 18 else 9 if self.opset <= 20 else 10
        # graph outputs were declared without shapes: take them from shape inference
        inferred = onnx.shape_inference.infer_shapes(m)
        known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
        for out in m.graph.output:
            vi = known.get(out.name)
            if vi is not None and vi.type.tensor_type.HasField("shape"):
                out.type.CopyFrom(vi.type)
        return m


# ---- analysis helpers --------------------------------------------------------------

def run_analysis(model: onnx.ModelProto, **options):
    onnx.checker.check_model(model, full_check=True)
    return analyze(model, AnalysisOptions(**options))


def group_of(a, node: str, roles=("out", "dw")):
    """The group holding a member of ``node`` in one of ``roles``."""
    found = [g for g in a.groups if any(m.node == node and m.role in roles for m in g.members)]
    assert len(found) == 1, f"{len(found)} groups for node '{node}' roles {roles}: " + describe(a)
    return found[0]


def members(group, tensor: str | None = None, role: str | None = None):
    return [m for m in group.members if (tensor is None or m.tensor == tensor) and (role is None or m.role == role)]


def blocked_by(group, *words: str) -> bool:
    """True when some blocking reason contains every word."""
    return any(all(w in reason for w in words) for reason in group.blocked)


def describe(a) -> str:
    lines = []
    for g in a.groups:
        lines.append(f"  group {g.id} size={g.size}x{len(g.roots)} prunable={g.prunable} inexact={g.inexact} "
                     f"blocked={g.blocked} members={[(m.tensor, m.axis, m.role) for m in g.members]}")
    return "\n".join(lines)


def oracle_all(a, model: onnx.ModelProto, batch: int = 2) -> int:
    """Run the dead-channel oracle on every prunable exact group; returns how many."""
    feeds = feeds_for(model, batch=batch)
    n = 0
    for g in a.prunable:
        if g.inexact:
            continue
        pruned = check_group(a, g, feeds)
        onnx.checker.check_model(pruned, full_check=True)
        n += 1
    return n


def prune(a, keeps: dict, check: bool = True) -> onnx.ModelProto:
    """Apply a plan ``{group id: [[kept] per class]}`` (or ``{group id: [kept]}`` for one
    class); the result is checked and run once."""
    groups = {}
    for gid, keep in keeps.items():
        g = a.group(gid)
        if keep and not isinstance(keep[0], (list, tuple)):
            keep = [keep]
        groups[g.id] = {"size": g.size, "keep": [list(k) for k in keep]}
    new = apply_plan(a, Plan("test", groups, {}))
    if check:
        onnx.checker.check_model(new, full_check=True)
        session(new).run(None, feeds_for(new))
    return new


def keep_first(g, n: int):
    return [list(range(n)) for _ in g.roots]


def value(model: onnx.ModelProto, name: str) -> np.ndarray:
    return WeightStore(model.graph).get(name)


def shape_of(model: onnx.ModelProto, name: str) -> tuple:
    return tuple(value(model, name).shape)


def node(model: onnx.ModelProto, name: str):
    for n in model.graph.node:
        if n.name == name:
            return n
    raise KeyError(name)


def attr(model: onnx.ModelProto, node_name: str, attr_name: str):
    for a in node(model, node_name).attribute:
        if a.name == attr_name:
            return helper.get_attribute_value(a)
    return None


def input_value(model: onnx.ModelProto, node_name: str, index: int) -> np.ndarray:
    return value(model, node(model, node_name).input[index])


def run(model: onnx.ModelProto, feeds=None):
    return session(model).run(None, feeds if feeds is not None else feeds_for(model))


def output_shapes(model: onnx.ModelProto) -> list:
    return [o.shape for o in run(model)]
