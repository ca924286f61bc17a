"""Pruned models and repair targets for the repair tests, and small hand-built graphs."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.allocate import select_channels
from onnxprune.api import _analysis
from onnxprune.data import load_data
from onnxprune.importance import score_groups
from onnxprune.model import load_model
from onnxprune.plan import Plan
from onnxprune.recover.targets import repair_targets
from onnxprune.runtime import session
from onnxprune.surgery import apply_plan


def prune_ratio(model, ratio=0.3, criterion="l2"):
    """(dense, pruned, targets): every prunable group keeps (1 - ratio) of its channels."""
    dense = load_model(model)
    a = _analysis(copy.deepcopy(dense))
    scores = score_groups(a, criterion)
    keep = {g.id: {"size": g.size, "keep": select_channels(g, scores[g.id], max(1, int(g.size * (1 - ratio))))}
            for g in a.prunable}
    plan = Plan("test", keep)
    return dense, apply_plan(a, plan, consume=False), repair_targets(a, plan)


def prune_channels(model, producer: str, keep: list[int]):
    """(dense, pruned, targets, analysis) with only the group produced by node ``producer`` cut to ``keep``."""
    dense = load_model(model)
    a = _analysis(copy.deepcopy(dense))
    group = next(g for g in a.prunable if producer in g.producers)
    plan = Plan("test", {group.id: {"size": group.size, "keep": [sorted(keep)]}})
    return dense, apply_plan(a, plan, consume=False), repair_targets(a, plan), a


def dataset(model, arrays: dict, batch_size=8):
    return load_data(arrays, model, batch_size=batch_size)


def random_dataset(model, n=32, batch_size=8):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_data(f"random:{n}", model, batch_size=batch_size)


def run(model, feeds):
    return session(model).run(None, feeds)


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(a, np.float64)))


def make_model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    return m


def fvi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def dependent_rows(rng, rows, cols, dtype=np.float32):
    """A weight of ``rows`` output rows where row 5 = 2·row 1 − row 3 (a linear
    combination of kept rows) — and its bias following the same combination."""
    w = rng.standard_normal((rows, cols)).astype(dtype)
    b = rng.standard_normal(rows).astype(dtype)
    w[5] = 2 * w[1] - w[3]
    b[5] = 2 * b[1] - b[3]
    return w, b
