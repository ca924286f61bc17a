"""Whole fixture models (batch 2, L = sum(R * output)): gradients at the inputs of the
Conv/Gemm/MatMul nodes, computed by ORT in float32, against central differences.

ORT CPU has no double Conv, and float32 differences are noisy where ReLU kinks sit close to
a coordinate, so the differences come from a float64 twin of the model run by onnx's
reference evaluator, cut at the tensor (it becomes an input; only what its outputs need
runs). The fixtures treat samples independently, so every perturbed copy of the sample that
holds a coordinate runs in one stacked batch."""

from __future__ import annotations

import copy
import math

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_average_pool import AveragePool_19 as _RefAveragePool

from onnxprune.calibration.autodiff import fdcheck
from onnxprune.runtime import random_inputs

from ..conftest import fixture_paths

BLOCKED = {"lstm.onnx": "LSTM", "if_model.onnx": "If"}  # no rule: the tensors before it are unavailable
LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
F32, F64 = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE


class ConvTranspose(OpRun):
    """Direct scatter of every kernel tap (the reference ignores ``group`` and is slow)."""

    op_domain = ""

    def _run(self, x, w, b=None, group=1, strides=None, pads=None, dilations=None, output_padding=None,
             kernel_shape=None, auto_pad=None, output_shape=None):
        assert auto_pad in (None, "NOTSET") and output_shape is None and x.ndim == 4
        (s0, s1), (d0, d1) = strides or (1, 1), dilations or (1, 1)
        pb0, pb1, pe0, pe1 = pads or (0, 0, 0, 0)
        op0, op1 = output_padding or (0, 0)
        n, c, h, wd = x.shape
        _, og, kh, kw = w.shape
        cg = c // group
        full = np.zeros((n, og * group, (h - 1) * s0 + (kh - 1) * d0 + 1 + op0, (wd - 1) * s1 + (kw - 1) * d1 + 1 + op1))
        for gi in range(group):
            xg, wg = x[:, gi * cg:(gi + 1) * cg], w[gi * cg:(gi + 1) * cg]
            for i in range(kh):
                for j in range(kw):
                    full[:, gi * og:(gi + 1) * og, i * d0:i * d0 + (h - 1) * s0 + 1:s0,
                         j * d1:j * d1 + (wd - 1) * s1 + 1:s1] += np.einsum("nchw,co->nohw", xg, wg[:, :, i, j])
        y = full[:, :, pb0:full.shape[2] - pe0, pb1:full.shape[3] - pe1]
        return ((y if b is None else y + b.reshape(1, -1, 1, 1)).astype(x.dtype),)


class AveragePool(_RefAveragePool):
    """Windows summed with numpy (the reference loops in Python) where no window passes the
    padding (ceil_mode 0)."""

    def _run(self, x, kernel_shape=None, strides=None, pads=None, ceil_mode=0, count_include_pad=0,
             auto_pad=None, dilations=None):
        if ceil_mode or (auto_pad not in (None, "NOTSET")) or x.ndim != 4 or any(d != 1 for d in dilations or ()):
            return super()._run(x, kernel_shape=kernel_shape, strides=strides, pads=pads, ceil_mode=ceil_mode,
                                count_include_pad=count_include_pad, auto_pad=auto_pad, dilations=dilations)
        (kh, kw), (s0, s1) = kernel_shape, strides or (1, 1)
        pb0, pb1, pe0, pe1 = pads or (0, 0, 0, 0)
        width = ((0, 0), (0, 0), (pb0, pe0), (pb1, pe1))
        win = np.lib.stride_tricks.sliding_window_view
        total = win(np.pad(x, width), (kh, kw), axis=(2, 3))[:, :, ::s0, ::s1].sum(axis=(-2, -1))
        ones = np.pad(np.ones(x.shape[2:]), width[2:])
        count = win(ones, (kh, kw))[::s0, ::s1].sum(axis=(-2, -1)) if not count_include_pad else kh * kw
        return ((total / count).astype(x.dtype),)


class Erf(OpRun):
    """The reference Erf rounds to float32."""

    op_domain = ""

    def _run(self, x):
        return (np.vectorize(math.erf, otypes=[x.dtype])(x),)


class BatchNormalization(OpRun):
    """The reference reads opset 9-13 BatchNormalization as training mode."""

    op_domain = ""

    def _run(self, x, scale, bias, mean, var, epsilon=1e-5, momentum=None, training_mode=None):
        shape = [-1] + [1] * (x.ndim - 2)
        inv = (scale / np.sqrt(var + epsilon)).reshape(shape)
        return ((x - mean.reshape(shape)) * inv + bias.reshape(shape),)


class LayerNormalization(OpRun):
    """The reference keeps the statistics in float32."""

    op_domain = ""

    def _run(self, x, scale, bias=None, axis=-1, epsilon=1e-5, stash_type=None):
        axes = tuple(range(axis % x.ndim, x.ndim))
        xc = x - x.mean(axis=axes, keepdims=True)
        y = xc / np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + epsilon) * scale
        return (y if bias is None else y + bias,)


TWIN_OPS = [ConvTranspose, AveragePool, Erf, BatchNormalization, LayerNormalization]


def layer_inputs(model: onnx.ModelProto) -> list[str]:
    consts = {t.name for t in model.graph.initializer}
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    out = []
    for n in model.graph.node:
        if n.op_type in LAYERS and n.input[0] not in consts and n.input[0] not in out:
            out.append(n.input[0])
    return out


def _double_graph(g: onnx.GraphProto) -> None:
    for t in g.initializer:
        if t.data_type == F32:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for vi in list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == F32:
            vi.type.tensor_type.elem_type = F64
    del g.value_info[:]
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == F32:
                a.i = F64
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == F32:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
            if a.type == onnx.AttributeProto.GRAPH:
                _double_graph(a.g)


def reference_fd(model, tensor, feeds, proj, base, coords, eps=1e-5):
    """dL/d(tensor) at flat ``coords`` by central differences of the float64 twin."""
    m = copy.deepcopy(model)
    g = m.graph
    for n in g.node:  # cut: the tensor becomes an input
        n.output[:] = [o + "__cut" if o == tensor else o for o in n.output]
    if tensor not in {i.name for i in g.input}:
        g.input.append(onnx.helper.make_tensor_value_info(tensor, F32, list(base.shape)))
    needed = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):  # only what the outputs need
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    del g.node[:]
    g.node.extend(reversed(keep))
    _double_graph(g)
    per_sample = base.size // base.shape[0]
    rows = {k: v for k, v in feeds.items() if k != tensor}
    stacked = {k: [] for k in list(rows) + [tensor]}
    for c in coords:
        b = c // per_sample
        for sign in (1, -1):
            t = base[b].astype(np.float64).copy()
            t.reshape(-1)[c % per_sample] += sign * eps
            stacked[tensor].append(t)
            for k, v in rows.items():
                stacked[k].append(v[b].astype(np.float64) if v.dtype.kind == "f" else v[b])
    run = ReferenceEvaluator(m, new_ops=TWIN_OPS).run
    outs = run(list(proj), {k: np.stack(v) for k, v in stacked.items()})
    fd = []
    for j, c in enumerate(coords):
        b = c // per_sample
        hi, lo = (sum(float(np.sum(o[2 * j + s] * proj[name][b])) for o, name in zip(outs, proj)) for s in (0, 1))
        fd.append((hi - lo) / (2 * eps))
    return np.asarray(fd)


def values_of(model, names, feeds):
    probe = copy.deepcopy(model)
    inner = [n for n in names if n not in feeds]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in inner)
    got = dict(zip(inner, fdcheck._session(probe).run(inner, feeds)))
    got.update({n: feeds[n] for n in names if n in feeds})
    return got


@pytest.mark.parametrize("path", fixture_paths(), ids=lambda p: p.name)
def test_fixture_gradients_match_finite_differences(path):
    model = onnx.load(str(path))
    feeds = random_inputs(model, batch=2, seed=0)
    proj = fdcheck.random_projections(model, feeds)
    res, grads = fdcheck.gradients(model, layer_inputs(model), feeds, proj, optimize=True)
    onnx.checker.check_model(res.model, full_check=True)
    blocker = BLOCKED.get(path.name)
    if blocker is None:
        assert not res.unavailable, res.unavailable
    else:
        assert res.unavailable and all(f"no backward rule for {blocker} " in why for why in res.unavailable.values())
    names = list(grads)
    bases = values_of(model, names, feeds)
    for w in names:
        assert grads[w].shape == bases[w].shape and np.isfinite(grads[w]).all()
    rng = np.random.default_rng(0)
    for w in sorted({names[0], names[len(names) // 2], names[-1]}, key=names.index):
        g = grads[w].reshape(-1).astype(np.float64)
        coords = rng.choice(g.size, 6, replace=False)
        fd = reference_fd(model, w, feeds, proj, bases[w], coords)
        scale = max(np.abs(fd).max(), 1e-6)
        np.testing.assert_allclose(g[coords], fd, rtol=1e-3, atol=1e-3 * scale, err_msg=w)


def test_original_outputs_unchanged_by_the_backward_graph():
    model = onnx.load(str(fixture_paths()[0].parent / "resnet_basic_bn.onnx"))
    feeds = random_inputs(model, batch=2, seed=0)
    proj = fdcheck.random_projections(model, feeds)
    res, _ = fdcheck.gradients(model, layer_inputs(model), feeds, proj)
    want = fdcheck._session(model).run(["output"], feeds)[0]
    got = fdcheck._session(res.model).run(["output"], feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
