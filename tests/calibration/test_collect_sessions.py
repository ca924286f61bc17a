"""The collection engine's sessions: one statistics session for every batch shape, one
gradient session with a short last batch padded (its padding rows dropped), and the
per-sample moments it reduces exact where they must be (a ≤ 0 counts)."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import onnxprune.runtime as runtime
from onnxprune.analysis import analyze
from onnxprune.calibration.collect import _layouts, _paddable, collect
from onnxprune.calibration.readpoints import find_read_points
from onnxprune.data import load_data
from onnxprune.model import load_model
from onnxprune.runtime import random_inputs

from ..conftest import MODELS


@pytest.fixture
def sessions(monkeypatch):
    built = []
    real = runtime.session

    def counting(model, *args, **kwargs):
        built.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(runtime, "session", counting)
    return built


def samples(model, n, seed=0):
    parts = [random_inputs(model, seed=seed + s) for s in range(n)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_one_statistics_session_serves_a_short_last_batch(sessions):
    model = load_model(MODELS / "resnet_basic_bn.onnx")
    a = analyze(model)
    ds = load_data(samples(model, 7), model, batch_size=3)  # 3 + 3 + 1
    calib = collect(a, a.prunable, ds, ("sum", "abs", "pooled"), device="cpu")
    assert len(sessions) == 1
    assert calib.samples == 7
    assert all(st.samples_of("pooled").shape[0] == 7 for st in calib.stats.values())


@pytest.mark.parametrize("name", ["resnet_basic_bn", "mobilenetv2", "c2f", "transformers/llama_tiny"])
def test_padded_gradient_batches_equal_one_batch(name, sessions):
    """7 samples in batches of 3: the last one is padded to 3 (the same gradient session)
    and gives the same per-sample Σ a·∂L/∂a as one batch of 7; labels are padded with it."""
    model = load_model(MODELS / f"{name}.onnx")
    a = analyze(model)
    x = samples(model, 7)
    y = np.arange(7) % 3
    whole = collect(a, a.prunable, load_data({**x, "y": y}, model, batch_size=7, labels_key="y"), ("ag", "sum"),
                    device="cpu")
    sessions.clear()
    parts = collect(a, a.prunable, load_data({**x, "y": y}, model, batch_size=3, labels_key="y"), ("ag", "sum"),
                    device="cpu")
    points = find_read_points(a, a.prunable)
    first = {k: v[:3] for k, v in x.items()}
    assert _paddable(a, points, _layouts(a, points, first), first)
    assert len(sessions) == 1
    assert parts.samples == whole.samples == 7
    assert parts.unavailable == whole.unavailable
    for key, st in whole.stats.items():
        if key in whole.unavailable:
            continue
        got, want = parts.stats[key].samples_of("ag"), st.samples_of("ag")
        assert got.shape == want.shape == (7, st.length)
        scale = np.abs(want).max() + 1e-12
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * scale)
        np.testing.assert_allclose(parts.stats[key].sums["sum"], st.sums["sum"], rtol=1e-4, atol=1e-3)
        assert parts.stats[key].count == st.count


def identity_conv_model(channels=4):
    """x → 1×1 conv with identity weights (its output is x, exactly) → 1×1 conv: the read
    point between them sees the input's values unchanged."""
    eye = np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)
    w2 = np.ones((2, channels, 1, 1), np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1"),
         helper.make_node("Conv", ["a", "w2"], ["y"], name="c2")],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", channels, 3, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 2, 3, 3])],
        [numpy_helper.from_array(eye, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_nonpositive_counts_are_exact_down_to_subnormals():
    model = identity_conv_model()
    a = analyze(model)
    tiny = np.float32(1.4e-45)  # the smallest positive subnormal
    x = np.random.default_rng(0).standard_normal((5, 4, 3, 3)).astype(np.float32)
    x[0, 0] = tiny
    x[1, 1] = -tiny
    x[2, 2] = 0.0
    x[3, 3] = -0.0
    x[4, 0, 0] = np.float32(1e30)
    ds = load_data({"x": x}, model, batch_size=2)
    calib = collect(a, a.prunable, ds, ("nonpos", "abs", "sum", "sumsq"), device="cpu")
    (st,) = calib.stats.values()
    flat = np.moveaxis(x.astype(np.float64), 1, 0).reshape(4, -1)
    np.testing.assert_array_equal(st.sums["nonpos"], (flat <= 0).sum(1))
    np.testing.assert_allclose(st.sums["abs"], np.abs(flat).sum(1), rtol=1e-6)
    assert st.count == 5 * 9


def test_abs_of_a_nonnegative_read_point_is_its_sum():
    """After a ReLU or a Clip at 0 Σ|a| is Σa: one moment fewer, the same value."""
    model = load_model(MODELS / "mobilenetv2.onnx")
    a = analyze(model)
    points = find_read_points(a, a.prunable)
    layouts = _layouts(a, points, samples(model, 1))
    assert any(lay.nonneg for lay in layouts.values()) and not all(lay.nonneg for lay in layouts.values())
    calib = collect(a, a.prunable, load_data(samples(model, 3), model, batch_size=2), ("abs", "sum"), device="cpu")
    for key, lay in layouts.items():
        if lay.nonneg:
            np.testing.assert_allclose(calib.stats[key].sums["abs"], calib.stats[key].sums["sum"], rtol=1e-12)


def test_gradient_runs_in_chunks_equal_one_run(sessions, monkeypatch):
    """Batches of 5 split into runs of at most 2 rows (2 + 2 + 1 padded): one session, the
    same per-sample terms and sums as one run of the whole data."""
    import onnxprune.calibration.collect as collect_module

    model = load_model(MODELS / "mobilenetv2.onnx")
    a = analyze(model)
    x = samples(model, 7)
    whole = collect(a, a.prunable, load_data(x, model, batch_size=7), ("ag", "abs"), device="cpu")
    per_sample = collect_module._activation_bytes_per_sample(a)
    monkeypatch.setattr(collect_module, "GRADIENT_RUN_BYTES", 2 * per_sample)
    assert collect_module._rows_per_run(a, 5, "cpu") == 2
    assert collect_module._rows_per_run(a, 5, "cuda") == 5
    sessions.clear()
    parts = collect(a, a.prunable, load_data(x, model, batch_size=5), ("ag", "abs"), device="cpu")
    assert len(sessions) == 1
    assert next(i for i in sessions[0].graph.input if i.name == "input").type.tensor_type.shape.dim[0].dim_value == 2
    for key, st in whole.stats.items():
        got, want = parts.stats[key].samples_of("ag"), st.samples_of("ag")
        assert got.shape == want.shape == (7, st.length)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * (np.abs(want).max() + 1e-12))
        np.testing.assert_allclose(parts.stats[key].sums["abs"], st.sums["abs"], rtol=1e-5)
        assert parts.stats[key].count == st.count and parts.stats[key].samples == 7
