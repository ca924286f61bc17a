"""validate: identical models pass with zero difference, damaged ones fail naming the
metric; prune refuses to write a model that misses the budget; data is checked."""

import json

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune import errors
from onnxprune.data import load_data
from tests.conftest import MODELS
from tests.test_cli import assert_clean_failure, run

MODEL = MODELS / "resnet_basic.onnx"


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "val.npz"
    np.savez(path, input=rng.standard_normal((12, 3, 32, 32)).astype(np.float32), y=rng.integers(0, 10, 12))
    return path


def damaged(tmp_path):
    m = onnx.load(str(MODEL))
    w = next(t for t in m.graph.initializer if len(t.dims) == 4)
    w.CopyFrom(onnx.numpy_helper.from_array(np.zeros(tuple(w.dims), np.float32), w.name))
    path = tmp_path / "damaged.onnx"
    onnx.save(m, str(path))
    return path


def test_identical_models_pass_with_zero_difference(data):
    code, out, err = run("validate", MODEL, MODEL, "--data", data, "--labels", "y", "--max-drop", "0",
                         "--atol", "0", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["passed"] and r["samples"] == 12
    (o,) = r["outputs"]
    assert o["max_abs_diff"] == 0 and o["cosine_mean"] == pytest.approx(1.0) and o["snr_db"] is None
    assert r["classifier"]["top1_agreement"] == 1.0
    assert r["classifier"]["accuracy_before"] == r["classifier"]["accuracy_after"]
    assert r["model"]["params_before"] == r["model"]["params_after"]
    assert r["latency"]["p50_before_ms"] > 0


def test_damaged_model_fails_naming_the_metric(tmp_path, data):
    bad = damaged(tmp_path)
    code, out, err = run("validate", MODEL, bad, "--data", data, "--labels", "y", "--max-drop", "0.01")
    assert_clean_failure(code, err, errors.EXIT_VALIDATION, "agreement drop")
    assert "FAIL" in out
    code, _, err = run("validate", MODEL, bad, "--data", data, "--labels", "y", "--metric", "cosine",
                       "--max-drop", "0.001")
    assert_clean_failure(code, err, errors.EXIT_VALIDATION, "cosine drop")
    code, _, err = run("validate", MODEL, bad, "--data", data, "--labels", "y", "--atol", "1e-5")
    assert_clean_failure(code, err, errors.EXIT_VALIDATION, "differs by up to")


def test_label_metrics(data):
    r = onnxprune.validate(str(MODEL), str(MODEL), str(data), labels="y", metric="f1", max_drop=0.0)
    cls = r["classifier"]
    assert r["passed"] and 0 <= cls["f1_before"] <= 1 and cls["recall_before"] == cls["recall_after"]


def test_prune_refuses_to_write_a_model_that_misses_the_budget(tmp_path, data):
    out = tmp_path / "small.onnx"
    code, _, err = run("prune", MODEL, "-o", out, "--ratio", "0.5", "--val", data, "--labels", "y",
                       "--max-drop", "0.0")
    assert_clean_failure(code, err, errors.EXIT_VALIDATION, "fails validation")
    assert not out.exists()
    code, stdout, err = run("prune", MODEL, "-o", out, "--ratio", "0.5", "--val", data, "--labels", "y",
                            "--max-drop", "0.0", "--force", "--report", tmp_path / "r.json")
    assert code == 0, err
    assert out.exists() and "FAIL" in stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["validation"]["passed"] is False and report["validation"]["failures"]


@pytest.mark.parametrize("arrays, fragment", [
    ({"wrong": np.zeros((2, 3, 32, 32), np.float32)}, "no array for model input 'input'"),
    ({"input": np.zeros((2, 3, 16, 16), np.float32)}, "dim 2 is 16"),
    ({"input": np.zeros((2, 3, 32), np.float32)}, "rank 3"),
    ({"input": np.full((2, 3, 32, 32), "a")}, "data for a float32 input"),
    ({"input": np.full((2, 3, 32, 32), np.nan, np.float32)}, "NaN"),
    ({"input": np.zeros((2, 3, 32, 32), np.float32), "extra": np.zeros(2)}, "'extra' is not a model input"),
])
def test_data_errors_are_one_line_with_exit_11(tmp_path, arrays, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    code, _, err = run("validate", MODEL, MODEL, "--data", path)
    assert_clean_failure(code, err, errors.EXIT_DATA, fragment)


def test_data_sources(tmp_path):
    model = onnx.load(str(MODEL))
    rng = np.random.default_rng(1)
    for i in range(3):
        np.savez(tmp_path / f"s{i}.npz", input=rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    ds = load_data(str(tmp_path), model, batch_size=4)
    assert ds.samples == 6 and [len(b["input"]) for b in ds.batches] == [4, 2]
    ds = load_data({"input": rng.standard_normal((5, 3, 32, 32))}, model)  # float64 is cast
    assert ds.batches[0]["input"].dtype == np.float32
    ds = load_data([{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}] * 3, model)
    assert ds.samples == 3
    with pytest.warns(RuntimeWarning, match="synthetic"):
        assert load_data("random:5", model).samples == 5


def test_pruned_model_keeps_metadata_and_gains_a_pruning_entry():
    m = onnx.load(str(MODEL))
    m.producer_name, m.doc_string = "my-exporter", "a doc string"
    onnx.helper.set_model_props(m, {"labels": "cat,dog"})
    pruned = onnxprune.prune(m, ratio=0.5).model
    assert pruned.producer_name == "my-exporter" and pruned.doc_string == "a doc string"
    props = {p.key: p.value for p in pruned.metadata_props}
    assert props["labels"] == "cat,dog" and "onnxprune" in props


def test_validate_reads_model_protos_without_changing_them(data):
    a = onnx.load(str(MODEL))
    b = onnxprune.prune(a, ratio=0.5).model
    before = (a.SerializeToString(), b.SerializeToString())
    onnxprune.validate(a, b, str(data), labels="y", latency_runs=0)
    assert (a.SerializeToString(), b.SerializeToString()) == before
