"""Block-wise distillation (``--blockwise``): the student is cut at its residual sums (see
:mod:`.features`) into consecutive blocks; each block is trained alone to reproduce the
dense model's tensor at its end (on the channels the student kept) from what the
student itself computes at its inputs, first block first, so every block trains on the
inputs the already-trained blocks before it produce (sequential, as in BRECQ, Li et al.
2021). The last block ends at the model outputs and distils them like the whole-model run.

A block's graph holds only its nodes, so a step costs that block's forward and backward,
plus the student's forward up to the block (to make its inputs) and the teacher's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from ..runtime import session
from .graph import Term


@dataclass
class Block:
    nodes: list  # node indices in graph order
    inputs: list  # tensors read from outside the block (graph inputs or earlier tensors)
    end: str | None  # the boundary tensor it produces (None: the last block, ending at the outputs)


def cut_blocks(model: onnx.ModelProto, boundaries: list[str]) -> list[Block]:
    g = model.graph
    producer = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    consts = {t.name for t in g.initializer}

    def ancestors(tensors, assigned):
        seen, stack = set(), [producer[t] for t in tensors if t in producer]
        while stack:
            i = stack.pop()
            if i in seen or i in assigned:
                continue
            seen.add(i)
            stack.extend(producer[t] for t in g.node[i].input if t in producer)
        return seen

    assigned: set = set()
    blocks = []
    ends = [b for b in boundaries if b in producer] + [None]
    for end in ends:
        targets = [end] if end is not None else [o.name for o in g.output]
        nodes = sorted(ancestors(targets, assigned))
        if not nodes:
            continue
        made = {o for i in nodes for o in g.node[i].output}
        reads = [t for i in nodes for t in g.node[i].input if t and t not in made and t not in consts]
        blocks.append(Block(nodes, list(dict.fromkeys(reads)), end))
        assigned.update(nodes)
    return blocks


def block_model(model: onnx.ModelProto, block: Block, outputs: list[str], types: dict, shapes: dict) -> onnx.ModelProto:
    """The block alone: its nodes, the initializers they read, its external reads as graph
    inputs (weights among them keep their declarations)."""
    g = model.graph
    nodes = [g.node[i] for i in block.nodes]
    used = {t for n in nodes for t in n.input}
    inits = [t for t in g.initializer if t.name in used]
    declared = {i.name: i for i in g.input}
    inputs = []
    for t in block.inputs:
        if t in declared:
            inputs.append(declared[t])
        else:
            dims = shapes.get(t)
            dims = None if dims is None else ["N"] + list(dims[1:])  # the batch dim stays free
            inputs.append(helper.make_tensor_value_info(t, types.get(t, onnx.TensorProto.FLOAT), dims))
    outs = [helper.make_tensor_value_info(o, types.get(o, onnx.TensorProto.FLOAT), None) for o in outputs]
    graph = helper.make_graph(nodes, f"{g.name}_block", inputs, outs, inits)
    m = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return m


class BlockInputs:
    """Feeds of one block: the student's own tensors at the block's inputs (current
    weights), computed from the data by the student's forward pass."""

    def __init__(self, student: onnx.ModelProto, block: Block, params: dict, samples, device: str):
        self.samples, self.params = samples, params
        self.data_inputs = {i.name for i in student.graph.input} - set(params)
        self.needed = [t for t in block.inputs if t not in params]
        self.computed = [t for t in self.needed if t not in self.data_inputs]
        self.block_params = [t for t in block.inputs if t in params]
        m = onnx.ModelProto()
        m.CopyFrom(student)
        del m.graph.output[:]
        m.graph.output.extend(onnx.ValueInfoProto(name=t) for t in self.computed)
        self.sess = session(m, device) if self.computed else None
        self.n = samples.n
        self.image_like = samples.image_like
        self.raw: dict | None = None

    def batch(self, idx: np.ndarray, rng, augment: str) -> dict:
        raw = self.samples.batch(idx, rng, augment)
        self.raw = raw
        out = {k: v for k, v in raw.items() if k in self.needed}
        if self.sess is not None:
            out.update(zip(self.computed, self.sess.run(self.computed, {**raw, **self.params})))
        return out


def block_terms(block: Block, output_terms: list[Term], feature_of: dict) -> list[Term]:
    if block.end is None:
        return output_terms
    return [feature_of[block.end]]


def train_blockwise(student, base, params, terms, samples, split, teacher, o, augment, progress, started, shapes,
                    types) -> tuple:
    """Train block after block (see :mod:`.blocks`); the step budget is shared evenly."""
    import dataclasses
    import time

    from ..errors import BadArgumentError
    from ..progress import Progress
    from .loop import Trainer, planned_steps, run
    from .trainable import write_back

    if o.checkpoint or o.resume:
        raise BadArgumentError("finetune: --blockwise does not checkpoint or resume (its blocks are short runs)")
    if o.time_budget is not None and o.steps is None and o.epochs is None:
        raise BadArgumentError("finetune: --blockwise takes --steps or --epochs, not --time-budget")
    outputs = [t for t in terms if t.teacher in {x.name for x in student.graph.output}]
    feature_of = {t.tensor: t for t in terms if t not in outputs}
    blocks = cut_blocks(student, list(feature_of))
    total = planned_steps(o, split)
    per_block = max(1, total // len(blocks))
    report_blocks = []
    bar = Progress(len(blocks), "finetune blocks", progress)
    for block in blocks:
        bterms = block_terms(block, outputs, feature_of)
        bmodel = block_model(student, block, [t.tensor for t in bterms], types, shapes)
        inputs = BlockInputs(student, block, params, samples, o.device)
        bparams = {w: params[w] for w in inputs.block_params}
        if not bparams:
            continue
        view = _TermView(teacher, terms, bterms, inputs)
        bo = dataclasses.replace(o, steps=per_block, epochs=None, time_budget=None)
        trainer = Trainer(bmodel, bparams, bterms, inputs, split, view, bo, augment)
        how = run(trainer, False)
        for k, v in trainer.best[2].items():
            params[k][...] = v
        evals = trainer.history.evals
        report_blocks.append({"end": block.end or "outputs", "nodes": len(block.nodes), "steps": trainer.step,
                              "before": evals[0]["loss"], "best": trainer.best[0], "seconds": how["seconds"]})
        bar.step()
    bar.close()
    model = write_back(base, params)
    report = {
        "steps": sum(b["steps"] for b in report_blocks), "seconds": time.perf_counter() - started,
        "best_step": sum(b["steps"] for b in report_blocks), "blockwise": report_blocks,
        "before": {"step": 0, "loss": sum(b["before"] for b in report_blocks)},
        "best": {"step": sum(b["steps"] for b in report_blocks), "loss": sum(b["best"] for b in report_blocks)},
        "trainable_weights": len(params), "trainable_parameters": int(sum(v.size for v in params.values())),
        "frozen": {},
        "terms": [{"tensor": t.tensor, "kind": t.kind, "weight": t.weight} for t in terms],
        "samples": {"train": int(len(split.train)), "holdout": int(len(split.holdout)), "batch": split.batch},
        "augment": augment, "options": dict(vars(o)), "history": {"train": [], "evals": []},
    }
    return model, report


class _TermView:
    """The shared teacher's targets for one block's terms, from the raw batch its inputs saw."""

    def __init__(self, teacher, all_terms, terms, inputs):
        self.teacher, self.inputs = teacher, inputs
        self.pick = [all_terms.index(t) for t in terms]

    def targets(self, feeds, idx=None, cacheable=True):
        got = self.teacher.targets(self.inputs.raw, idx, cacheable)
        return [got[i] for i in self.pick]
