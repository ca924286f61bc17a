"""Finite-difference oracle for the generated backward graphs.

For L = sum_o <R_o, output_o> with fixed random R, :func:`gradients` runs the backward
graph of :func:`~onnxprune.calibration.autodiff.build_backward` and :func:`fd_gradient`
estimates dL/dt at chosen coordinates of any tensor t by central differences, running the
forward graph cut at t (t becomes a graph input; everything upstream still runs)."""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...runtime import runnable_bytes
from ...shapes import infer_shapes, with_input_shapes
from . import GradModel, build_backward


def _session(model: onnx.ModelProto, optimize: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(runnable_bytes(model), so, providers=["CPUExecutionProvider"])


def concrete_shapes(model: onnx.ModelProto, feeds: dict) -> dict:
    """Static shapes for these inputs, by shape inference."""
    shapes = infer_shapes(with_input_shapes(model, {k: list(v.shape) for k, v in feeds.items()}))
    return {k: list(v) for k, v in shapes.items() if v is not None and all(isinstance(d, int) for d in v)}


def runtime_shapes(model: onnx.ModelProto, feeds: dict) -> dict:
    """The shapes every tensor actually has for these inputs (one run, every tensor exposed)."""
    m = copy.deepcopy(model)
    have = {o.name for o in m.graph.output}
    names = [o for n in m.graph.node for o in n.output if o and o not in have]
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    values = _session(m).run(names, feeds)
    shapes = {n: list(v.shape) for n, v in zip(names, values)}
    shapes.update({k: list(v.shape) for k, v in feeds.items()})
    shapes.update({t.name: list(t.dims) for t in m.graph.initializer})
    out_values = _session(model).run([o.name for o in model.graph.output], feeds)
    shapes.update({o.name: list(v.shape) for o, v in zip(model.graph.output, out_values)})
    return shapes


def float_outputs(model: onnx.ModelProto) -> list[str]:
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
    return [o.name for o in model.graph.output if o.type.tensor_type.elem_type in floats]


def random_projections(model: onnx.ModelProto, feeds: dict, seed: int = 1) -> dict[str, np.ndarray]:
    """One random R per float output, shaped and typed like that output."""
    outs = float_outputs(model)
    values = _session(model).run(outs, feeds)
    rng = np.random.default_rng(seed)
    return {o: rng.standard_normal(v.shape).astype(v.dtype) for o, v in zip(outs, values)}


def with_seeds(model: onnx.ModelProto, projections: dict[str, np.ndarray]):
    """(copy of the model holding each R as an initializer, seeds for build_backward)."""
    m = copy.deepcopy(model)
    seeds = {}
    for out, r in projections.items():
        name = f"fdcheck_seed_{len(seeds)}"
        m.graph.initializer.append(numpy_helper.from_array(r, name))
        seeds[out] = name
    return m, seeds


def gradients(model: onnx.ModelProto, wrt, feeds: dict, projections: dict, optimize: bool = False):
    """(GradModel, {wrt: gradient array} for the available ones)."""
    m, seeds = with_seeds(model, projections)
    result: GradModel = build_backward(m, wrt, seeds, runtime_shapes(m, feeds))
    names = list(result.grads.values())
    values = _session(result.model, optimize).run(names, feeds) if names else []
    by_output = dict(zip(names, values))
    return result, {w: by_output[g] for w, g in result.grads.items()}


def cut_at(model: onnx.ModelProto, tensor: str, dtype: int, dims: list) -> onnx.ModelProto:
    """A copy where ``tensor`` is a graph input: its producer's output is renamed away."""
    m = copy.deepcopy(model)
    g = m.graph
    if any(i.name == tensor for i in g.input):
        return m
    for node in g.node:
        for k, o in enumerate(node.output):
            if o == tensor:
                node.output[k] = tensor + "__fdcheck_cut"
    g.input.append(helper.make_tensor_value_info(tensor, dtype, dims))
    return m


def loss(outputs: dict[str, np.ndarray], projections: dict[str, np.ndarray]) -> float:
    return float(sum(np.sum(outputs[o].astype(np.float64) * r.astype(np.float64)) for o, r in projections.items()))


def fd_gradient(model: onnx.ModelProto, tensor: str, feeds: dict, projections: dict, coords=None,
                directions=(), eps: float = 1e-6, base: np.ndarray | None = None):
    """Central differences of L at ``tensor``: (values at the flat ``coords`` (all when
    None), directional derivatives along each array in ``directions``). ``base``: the
    tensor's value for ``feeds`` when already known."""
    if base is None:
        probe = copy.deepcopy(model)
        probe.graph.output.append(onnx.ValueInfoProto(name=tensor))
        base = _session(probe).run([tensor], feeds)[0]
    cut = cut_at(model, tensor, helper.np_dtype_to_tensor_dtype(base.dtype), list(base.shape))
    sess = _session(cut)
    outs = list(projections)
    rest = {k: v for k, v in feeds.items() if k != tensor}

    def at(value):
        return loss(dict(zip(outs, sess.run(outs, {**rest, tensor: value}))), projections)

    def central(delta):
        hi = np.asarray(base.astype(np.float64) + delta).astype(base.dtype)  # 0-d stays an array
        lo = np.asarray(base.astype(np.float64) - delta).astype(base.dtype)
        d = delta.reshape(-1)
        step = (hi.astype(np.float64) - lo.astype(np.float64)).reshape(-1)
        taken = float(np.dot(step, d)) / float(np.linalg.norm(d))  # the step after rounding to dtype
        return (at(hi) - at(lo)) / taken  # derivative along delta / |delta|

    coords = range(base.size) if coords is None else coords
    values = []
    for c in coords:
        delta = np.zeros(base.size)
        delta[c] = eps
        values.append(central(delta.reshape(base.shape)))
    dirs = [central(eps * d / np.linalg.norm(d)) * np.linalg.norm(d) for d in directions]
    return np.asarray(values), np.asarray(dirs)
