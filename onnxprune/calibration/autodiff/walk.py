"""The reverse walk: which nodes lie between the wrt tensors and the seeds, their rules in
reverse topological order, fan-out sums, and which gradients a node without a rule blocks."""

from __future__ import annotations

import onnx
from onnx import helper

from ...weights import subgraph_references
from .graph import Builder
from .rules import NON_DIFFERENTIABLE, NeedsOpset, NoGradient, NoRule, rule_for


class Walk:
    def __init__(self, model: onnx.ModelProto, wrt: list[str], seeds: dict[str, str], shapes: dict, opset: int,
                 types: dict[str, int]):
        self.model, self.wrt, self.seeds = model, wrt, seeds
        self.b = Builder(model, shapes, opset, types, variables=wrt)
        self.contrib: dict[str, list[str]] = {}
        self.blocked: dict[str, str] = {}
        self.summed: dict[str, str | None] = {}
        self.needed_opset = 0

    # ---- which nodes matter ------------------------------------------------------
    def _active(self):
        nodes = list(self.model.graph.node)
        b = self.b
        fwd = {w for w in self.wrt if b.is_float(w)}
        for node in nodes:
            reads = set(node.input) | subgraph_references(node)
            if node.op_type in NON_DIFFERENTIABLE and node.domain in ("", "ai.onnx"):
                continue
            if reads & fwd:
                fwd.update(o for o in node.output if o and b.is_float(o))
        bwd = {s for s in self.seeds if s in fwd}
        active = []
        for node in reversed(nodes):
            if any(o in bwd for o in node.output if o):
                reads = [i for i in node.input if i] + sorted(subgraph_references(node))
                bwd.update(i for i in reads if i in fwd)
                active.append(node)
        return active, bwd  # active: reverse topological order

    # ---- the walk ----------------------------------------------------------------
    def run(self) -> tuple[dict[str, str], dict[str, str]]:
        active, live = self._active()
        for t, s in self.seeds.items():
            if t in live:
                self.contrib.setdefault(t, []).append(s)
        for node in active:
            self._backward(node, live)
        grads, unavailable = {}, {}
        for w in self.wrt:
            if not self.b.is_float(w):
                unavailable[w] = f"'{w}' is not a float tensor"
            elif w in self.blocked:
                unavailable[w] = self.blocked[w]
            else:
                g = self._sum(w)
                if g is None:
                    unavailable[w] = f"'{w}' does not reach any seed (its gradient is zero)"
                    continue
                # a backward tensor becomes the output itself (an Identity would copy it)
                own = g in self.b.produced and g not in grads.values()
                grads[w] = g if own else self.b.op("Identity", [g], hint=f"{w}_grad")
        return grads, unavailable

    def _sum(self, t: str) -> str | None:
        if t not in self.summed:
            parts = self.contrib.get(t, [])
            self.summed[t] = None if not parts else parts[0] if len(parts) == 1 else \
                self.b.op("Sum", parts, hint=f"{t}_gsum")
        return self.summed[t]

    def _block(self, node: onnx.NodeProto, live: set, reason: str) -> None:
        for i in list(node.input) + sorted(subgraph_references(node)):
            if i in live:
                self.blocked.setdefault(i, reason)

    def _backward(self, node: onnx.NodeProto, live: set) -> None:
        outs = [o if o in live else "" for o in node.output]
        stop = next((self.blocked[o] for o in outs if o in self.blocked), None)
        if stop is not None:
            self._block(node, live, stop)
            return
        gy = [self._sum(o) if o else None for o in outs]
        if all(g is None for g in gy):
            return  # nothing flows back through this node: zero gradient, no block
        label = f"{node.op_type} '{node.name or node.output[0]}'"
        hidden = [r for r in subgraph_references(node) if r in live]
        rule = rule_for(node.op_type, node.domain)
        if rule is None or hidden:
            self._block(node, live, f"no backward rule for {label}")
            return
        needs = [bool(i) and i in live for i in node.input]
        while True:
            try:
                got = rule(node, self.b, gy, needs)
                missing = [k for k, need in enumerate(needs) if need and k not in got]
                if missing:
                    raise NoGradient(missing, f"no gradient for input {missing[0]}")
            except NeedsOpset as exc:
                self.needed_opset = max(self.needed_opset, exc.version)
                self._block(node, live, f"backward of {label} unavailable: {exc}")
                return
            except NoGradient as exc:  # only those inputs are unavailable; the rule runs again without them
                if not any(0 <= k < len(needs) and needs[k] for k in exc.indices):
                    self._block(node, live, f"backward of {label} unavailable: {exc}")
                    return
                for k in exc.indices:
                    if 0 <= k < len(needs) and needs[k]:
                        self.blocked.setdefault(node.input[k], f"backward of {label} unavailable: {exc}")
                        needs[k] = False
                if any(needs):
                    continue
                return
            except NoRule as exc:
                self._block(node, live, f"backward of {label} unavailable: {exc}")
                return
            break
        for k, need in enumerate(needs):
            if need and got[k] is not None:
                self.contrib.setdefault(node.input[k], []).append(got[k])


def finish(model: onnx.ModelProto, walk: Walk, grads: dict[str, str]) -> None:
    """Append the backward nodes that feed a gradient output (dead ones dropped), their
    initializers, and the gradient outputs; drop unused extra forward outputs."""
    b = walk.b
    produced = {o: n for n in b.nodes for o in n.output}
    keep: set[int] = set()
    needed: set[str] = set()
    stack = list(grads.values())
    while stack:
        t = stack.pop()
        if t in needed:
            continue
        needed.add(t)
        node = produced.get(t)
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            stack.extend(i for i in node.input if i)
    g = model.graph
    g.node.extend(n for n in b.nodes if id(n) in keep)
    g.initializer.extend(t for t in b.inits if t.name in needed)
    for node, count in b.extended:
        if not any(o in needed for o in node.output[count:]):
            del node.output[count:]
    fix_input_dims(model, b.shapes)
    for w, name in grads.items():
        dims = b.shapes.get(w)
        dims = list(dims) if dims is not None and all(isinstance(d, int) for d in dims) else None
        g.output.append(helper.make_tensor_value_info(name, b.elem(w), dims))


def fix_input_dims(model: onnx.ModelProto, shapes: dict) -> None:
    """Give the graph inputs the concrete dims the backward graph was built for (its shape
    constants hold only for them); ORT then proves tensor shapes equal and keeps the
    backward convs and the masks between them in its blocked layout."""
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        dims = shapes.get(vi.name)
        if vi.name in inits or not vi.type.HasField("tensor_type") or dims is None:
            continue
        have = vi.type.tensor_type.shape.dim
        if len(have) != len(dims) or not all(isinstance(d, int) for d in dims):
            continue
        for d, v in zip(have, dims):
            d.Clear()
            d.dim_value = v
