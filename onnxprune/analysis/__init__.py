"""Channel analysis: run the op rules over the graph until the channel spaces are stable,
then collect pruning groups."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import onnx

from ..model import default_opset
from ..shapes import infer_shapes, with_input_shapes
from ..weights import WeightStore, untie_shared_constants
from .context import RuleContext
from .fold import check_channel_dependent_values
from .groups import PruneGroup, build_groups
from .rules import rule_for
from .spaces import SpaceTable
from .untie import untie_shape_targets

MAX_PASSES = 64
HEAD_MODES = ("heads", "dims")  # prune whole attention heads, or the same head-dim indices in every head


@dataclass
class AnalysisOptions:
    prune_norm_spaces: bool = False
    input_shapes: dict | None = None
    head_mode: str = "heads"  # "heads": whole attention heads; "dims": same head-dim indices in every head


@dataclass
class Analysis:
    model: onnx.ModelProto  # working copy: named nodes, untied constants
    copies: dict  # untied copy name -> original name
    ctx: RuleContext
    groups: list[PruneGroup]
    options: AnalysisOptions
    passes: int = 1
    notes: list = field(default_factory=list)
    calibration: object = None  # calibration.collect.Calibration, for data-aware criteria

    @property
    def table(self) -> SpaceTable:
        return self.ctx.table

    @property
    def prunable(self) -> list[PruneGroup]:
        return [g for g in self.groups if g.prunable]

    def group(self, gid: int) -> PruneGroup:
        for g in self.groups:
            if g.id == gid:
                return g
        raise KeyError(gid)


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (rules and plans refer to nodes by name)."""
    taken = {n.name for n in model.graph.node if n.name}
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            base = f"{node.op_type}_{i}"
            name = base
            while name in taken or name in seen:
                name += "_"
            node.name = name
        seen.add(node.name)


def has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def analyze(model: onnx.ModelProto, options: AnalysisOptions | None = None, in_place: bool = False) -> Analysis:
    """Find the pruning groups of ``model``: not modified unless ``in_place`` (then it
    becomes the working copy: nodes named, shared constants untied)."""
    options = options or AnalysisOptions()
    work = model if in_place else copy.deepcopy(model)
    name_nodes(work)
    untie_shape_targets(work)
    copies = untie_shared_constants(work)
    shapes = infer_shapes(work)
    cost_shapes = infer_shapes(with_input_shapes(work, options.input_shapes))
    store = WeightStore(work.graph)
    opset = default_opset(work)
    cuts: dict = {}
    grains: dict = {}
    periods: dict = {}
    notes: list = []
    for passes in range(1, MAX_PASSES + 1):
        table = SpaceTable(cuts=cuts, grains=grains, periods=periods)
        ctx = RuleContext(work, shapes, cost_shapes, store, table, opset, options)
        ctx.node_index = {n.name: i for i, n in enumerate(work.graph.node)}
        notes = []
        for node in work.graph.node:
            _run_rule(node, ctx, notes)
        check_channel_dependent_values(ctx)
        for out in work.graph.output:
            for amap in ctx.tracked(out.name).values():
                table.block(amap, f"reaches graph output '{out.name}'")
        if not table.new_cut:
            break
        cuts, grains, periods = table.cuts, table.grains, table.periods
    groups = build_groups(ctx.table, ctx.members)
    return Analysis(work, copies, ctx, groups, options, passes, notes)


def _run_rule(node: onnx.NodeProto, ctx: RuleContext, notes: list) -> None:
    label = f"{node.op_type} '{node.name}'"
    if has_subgraph(node):
        ctx.block_inputs(node, f"{label} has subgraphs (If/Loop/Scan are not analyzed)")
        return
    fn = rule_for(node.op_type, node.domain)
    if fn is None:
        domain = f" (domain '{node.domain}')" if node.domain not in ("", "ai.onnx") else ""
        ctx.block_inputs(node, f"{label}{domain} has no channel rule")
        return
    try:
        fn(node, ctx)
    except Exception as exc:  # a rule must never take the whole analysis down
        ctx.block_inputs(node, f"{label}: rule failed ({type(exc).__name__}: {exc})")
        notes.append((node.name, f"rule failed: {type(exc).__name__}: {exc}"))


__all__ = ["HEAD_MODES", "analyze", "Analysis", "AnalysisOptions", "PruneGroup"]
