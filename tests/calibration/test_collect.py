"""The streaming collection engine: statistics reduced in ORT batch by batch equal the
same statistics computed from all activations at once."""

import copy

import numpy as np
import onnx
import pytest

from onnxprune.analysis import analyze
from onnxprune.calibration.collect import collect
from onnxprune.calibration.readpoints import find_read_points
from onnxprune.data import load_data
from onnxprune.model import load_model
from onnxprune.runtime import random_inputs, session

from ..conftest import MODELS

FIXTURES = ["resnet_basic_bn", "mobilenetv2", "flatten_head", "matmul_tokens", "densenet", "opset11_mobilenet",
            # some read points reduced whole (the leading axis not known to be the batch, or token rows)
            "c2f", "unet", "transformers/gpt2_tiny", "transformers/bert_tiny"]


def all_activations(model, tensors, feeds):
    m = copy.deepcopy(model)
    for t in tensors:
        m.graph.output.append(onnx.ValueInfoProto(name=t))
    sess = session(m, device="cpu")
    return dict(zip(tensors, sess.run(list(tensors), feeds)))


@pytest.mark.parametrize("name", FIXTURES)
def test_streamed_statistics_equal_all_at_once(name):
    model = load_model(MODELS / f"{name}.onnx")
    a = analyze(model)
    data = {k: np.concatenate([random_inputs(model, seed=s)[k] for s in range(11)]) for k in random_inputs(model)}
    ds = load_data(data, model, batch_size=4)  # 4 + 4 + 3: the last batch is smaller
    calib = collect(a, a.prunable, ds, ("sum", "sumsq", "abs", "nonpos", "pooled"), device="cpu")
    assert calib.samples == 11
    acts = all_activations(a.model, sorted({rp.tensor for rp in calib.points.values()}), data)
    assert calib.points
    for key, rp in calib.points.items():
        x = np.moveaxis(acts[rp.tensor].astype(np.float64), rp.axis, 1)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        st = calib.stats[key]
        assert st.count == flat.shape[0] * flat.shape[2]
        np.testing.assert_allclose(st.sums["sum"], flat.sum((0, 2)), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(st.sums["sumsq"], (flat ** 2).sum((0, 2)), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(st.sums["abs"], np.abs(flat).sum((0, 2)), rtol=1e-4, atol=1e-3)
        np.testing.assert_array_equal(st.sums["nonpos"], (flat <= 0).sum((0, 2)))
        np.testing.assert_allclose(st.samples_of("pooled"), flat.mean(2), rtol=1e-4, atol=1e-5)


def test_read_points_are_the_inputs_of_contracting_consumers():
    model = load_model(MODELS / "resnet_basic_bn.onnx")
    a = analyze(model)
    points = find_read_points(a, a.prunable)
    nodes = {n.name: n for n in a.model.graph.node}
    for rp in points.values():
        for node in rp.nodes:
            assert nodes[node].op_type in ("Conv", "Gemm", "MatMul")
            assert rp.tensor in nodes[node].input
    # every prunable group is measured somewhere
    table = a.table
    measured = {r for rp in points.values() for r in rp.roots(table)}
    for g in a.prunable:
        assert {table.find(r) for r in g.roots} <= measured
