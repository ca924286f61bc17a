"""The Plan: which channels of which group survive. A small versioned JSON document that
can be reviewed, diffed and re-applied to the same model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import onnx

from .errors import PlanError

PLAN_FORMAT = "onnxprune.plan"
PLAN_VERSION = 1


def model_fingerprint(model: onnx.ModelProto) -> str:
    """Hash of the graph's structure and weight shapes (not values, not names of nothing)."""
    h = hashlib.sha256()
    g = model.graph
    for node in g.node:
        h.update(f"{node.op_type}|{node.domain}|{','.join(node.input)}|{','.join(node.output)};".encode())
    for t in sorted(g.initializer, key=lambda t: t.name):
        h.update(f"{t.name}:{t.data_type}:{list(t.dims)};".encode())
    for vi in list(g.input) + list(g.output):
        h.update(f"io:{vi.name};".encode())
    return h.hexdigest()[:16]


@dataclass
class Plan:
    fingerprint: str
    groups: dict = field(default_factory=dict)  # group id -> {"size": n, "keep": [[indices] per class]}
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "model_fingerprint": self.fingerprint,
            "settings": self.settings,
            "groups": [{"id": gid, "size": g["size"], "keep": g["keep"]} for gid, g in sorted(self.groups.items())],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise PlanError("not an onnxprune plan (missing \"format\": \"onnxprune.plan\")")
        if data.get("version") != PLAN_VERSION:
            raise PlanError(f"plan version {data.get('version')} is not supported (expected {PLAN_VERSION})")
        try:
            groups = {int(g["id"]): {"size": int(g["size"]), "keep": [[int(i) for i in k] for k in g["keep"]]}
                      for g in data["groups"]}
            return cls(str(data["model_fingerprint"]), groups, dict(data.get("settings", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"malformed plan: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def validate_against(self, analysis, fingerprint: str) -> None:
        if fingerprint != self.fingerprint:
            raise PlanError(f"plan was made for another model (fingerprint {self.fingerprint}, this model {fingerprint})")
        for gid, g in self.groups.items():
            try:
                group = analysis.group(gid)
            except KeyError:
                raise PlanError(f"plan names group {gid}, which this model does not have") from None
            if not group.prunable:
                raise PlanError(f"plan prunes group {gid}, which is blocked: {group.blocked[0]}")
            if g["size"] != group.size or len(g["keep"]) != len(group.roots):
                raise PlanError(f"group {gid}: plan expects {len(g['keep'])}x{g['size']} channels, model has "
                                f"{len(group.roots)}x{group.size}")
            counts = {len(k) for k in g["keep"]}
            if len(counts) != 1:
                raise PlanError(f"group {gid}: tied classes must keep equal counts")
            for k in g["keep"]:
                if not k or len(set(k)) != len(k) or min(k) < 0 or max(k) >= group.size:
                    raise PlanError(f"group {gid}: kept indices must be distinct, within 0..{group.size - 1}, "
                                    "and at least one")
