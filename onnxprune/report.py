"""Machine-readable reports for inspect and prune (versioned JSON schema)."""

from __future__ import annotations

from . import __version__
from .cost import CostModel, count_macs, count_params, counter, macs_unknown_reason
from .model import default_opset
from .shapes import approx_size

REPORT_FORMAT = "onnxprune.report"
REPORT_VERSION = 1
REPORT_SCHEMA = "schemas/report-v1.schema.json"  # package resource describing build_report's output


def group_macs_share(analysis, cost: CostModel, dense: float | None) -> dict:
    """MACs that scale with each group's channels (dense minus the group at zero width)."""
    if not dense:
        return {}
    out = {}
    for g in analysis.groups:
        zero = cost.macs(counter(analysis, {r: 0 for r in g.roots}))
        out[g.id] = (dense - zero) / dense if zero is not None else None
    return out


def inspect_report(model, analysis, cost: CostModel) -> dict:
    dense = cost.macs(counter(analysis, {}))
    share = group_macs_share(analysis, cost, dense)
    groups = []
    reasons: dict[str, int] = {}
    for g in analysis.groups:
        d = g.to_dict()
        d["macs_share"] = share.get(g.id)
        d["macs_per_channel"] = (None if share.get(g.id) is None or not dense
                                 else share[g.id] * dense / g.channels)
        d["members"] = len(g.members)
        groups.append(d)
        if g.blocked:
            reasons[g.blocked[0]] = reasons.get(g.blocked[0], 0) + 1
    prunable = [g for g in analysis.groups if g.prunable]
    touched = None
    if dense:
        zero_all = cost.macs(counter(analysis, {r: 0 for g in prunable for r in g.roots}))
        touched = None if zero_all is None else (dense - zero_all) / dense
    return {
        "format": REPORT_FORMAT + ".inspect",
        "version": REPORT_VERSION,
        "onnxprune_version": __version__,
        "model": {
            "opset": default_opset(model),
            "nodes": len(model.graph.node),
            "params": count_params(model),
            "macs": None if dense is None else int(round(dense)),
            "inputs": [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}],
            "outputs": [o.name for o in model.graph.output],
        },
        "summary": {
            "groups": len(analysis.groups),
            "prunable": len(prunable),
            "blocked": len(analysis.groups) - len(prunable),
            "prunable_channels": sum(g.channels for g in prunable),
            "prunable_macs_share": touched,
            "blocked_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "analysis_passes": analysis.passes,
            "head_mode": analysis.options.head_mode,
            "prune_norm_spaces": analysis.options.prune_norm_spaces,
        },
        "groups": groups,
    }


def model_facts(model, input_shapes=None) -> dict:
    """What a report says about a model before it is changed."""
    return {"params": count_params(model), "macs": count_macs(model, input_shapes), "bytes": approx_size(model)}


def build_report(before: dict, pruned, analysis, plan, input_shapes, seconds: float,
                 serialized: bytes | None = None) -> dict:
    macs_before, params_before = before["macs"], before["params"]
    macs_after = count_macs(pruned, input_shapes)
    params_after = count_params(pruned)
    groups = []
    for g in analysis.groups:
        entry = plan.groups.get(g.id)
        kept = len(entry["keep"][0]) if entry else g.size
        groups.append({
            "id": g.id,
            "name": g.name,
            "kind": g.kind,
            "size_before": g.channels,
            "size_after": kept * len(g.roots),
            "prunable": g.prunable,
            "exact": not g.inexact,
            "blocked_by": g.blocked,
            "members": [m.describe() for m in g.members],
        })
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "onnxprune_version": __version__,
        "settings": plan.settings,
        "params_before": params_before,
        "params_after": params_after,
        "params_ratio": params_after / params_before if params_before else None,
        "macs_before": macs_before,
        "macs_after": macs_after,
        "macs_ratio": macs_after / macs_before if macs_before and macs_after is not None else None,
        "macs_unknown_reason": None if macs_after is not None else macs_unknown_reason(pruned, input_shapes),
        "bytes_before": before["bytes"],
        "bytes_after": len(serialized) if serialized is not None else approx_size(pruned),
        "groups_total": len(analysis.groups),
        "groups_prunable": sum(g.prunable for g in analysis.groups),
        "groups_pruned": len(plan.groups),
        "seconds": round(seconds, 3),
        "groups": groups,
    }
