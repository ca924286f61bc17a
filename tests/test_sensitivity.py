"""Sensitivity sweep and the allocation from its curves: the dense point, ranges, serial
and parallel runs agreeing exactly, MACs targets met under rounding, and the CLI."""

import json
import sys
import warnings

import numpy as np
import pytest

import onnxprune.cli_sensitivity  # noqa: F401  (registers the command on the click group)
from onnxprune import errors
from onnxprune.allocate import allowed_count
from onnxprune.api import _analysis, inspect
from onnxprune.cli import main
from onnxprune.cost import CostModel, counter
from onnxprune.model import load_model
from onnxprune.sensitivity import allocate_from_sensitivity, sensitivity
from tests.conftest import MODELS

RESNET = MODELS / "resnet_basic_bn.onnx"
MOBILENET = MODELS / "mobilenetv2.onnx"


def sweep(model, data="random:16", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # synthetic data
        return sensitivity(model, data, **kw)


def comparable(result):
    out = json.loads(json.dumps(result))
    out.pop("seconds")
    out["settings"].pop("jobs")
    return out


@pytest.fixture(scope="module")
def mobilenet():
    return sweep(MOBILENET, ratios=(0, 0.1, 0.3, 0.5, 0.7))


@pytest.fixture(scope="module")
def mobilenet_analysis():
    return _analysis(load_model(MOBILENET), None, False, in_place=True)


def test_dense_point_ranges_and_shares(mobilenet):
    s = mobilenet
    assert s["format"] == "onnxprune.sensitivity" and s["samples"] == 16 and s["synthetic_data"]
    assert s["dense"]["value"] == 1.0
    shares = {g["id"]: g["macs_share"] for g in inspect(MOBILENET)["groups"]}
    assert len(s["groups"]) == sum(1 for g in inspect(MOBILENET)["groups"] if g["prunable"])
    for g in s["groups"]:
        assert g["macs_share"] == pytest.approx(shares[g["id"]])
        first, *rest = g["points"]
        assert first["ratio"] == 0 and first["kept"] == g["size"]
        assert first["value"] == 1.0 and first["drop"] == 0.0 and first["macs_ratio"] == pytest.approx(1.0)
        for p in rest:
            assert p["kept"] == round(g["size"] * (1 - p["ratio"])) and 1 <= p["kept"] < g["size"]
            assert 0.0 <= p["value"] <= 1.0 and p["drop"] == pytest.approx(1.0 - p["value"])
        macs = [p["macs_ratio"] for p in g["points"]]
        assert all(b < a for a, b in zip(macs, macs[1:])) and macs[-1] > 0
    # monotone-ish: removing 70% hurts at least as much as removing 10% for most groups
    worse = sum(g["points"][-1]["value"] <= g["points"][1]["value"] for g in s["groups"])
    assert worse >= 0.6 * len(s["groups"])
    # a ratio-0 point is the unpruned model, evaluated once for all groups
    assert s["candidates"] == 1 + sum(len({p["kept"] for p in g["points"][1:]}) for g in s["groups"])


def test_parallel_equals_serial_with_float_metric_and_labels():
    rng = np.random.default_rng(0)
    data = {"input": rng.standard_normal((20, 3, 32, 32)).astype(np.float32), "y": rng.integers(0, 10, 20)}
    kw = dict(ratios=(0.2, 0.6), metric="cosine", labels="y", groups=[0, 3, 6], batch_size=8)
    serial = sweep(RESNET, data, **kw)
    parallel = sweep(RESNET, data, jobs=2, **kw)
    assert comparable(parallel) == comparable(serial)
    assert [g["id"] for g in serial["groups"]] == [0, 3, 6]
    assert all(0.0 < p["value"] < 1.0 for g in serial["groups"] for p in g["points"])
    acc = sweep(RESNET, data, ratios=(0.0, 0.5), metric="accuracy", labels="y", groups=[3])
    dense = acc["dense"]["value"]
    assert 0.0 <= dense <= 1.0 and acc["groups"][0]["points"][0]["value"] == dense


def test_data_aware_criterion_collects_once():
    s = sweep(RESNET, ratios=(0.0, 0.5), criterion="activation", groups=[1, 4])
    assert s["settings"]["criterion"] == "activation" and len(s["groups"]) == 2
    assert all(g["points"][0]["value"] == 1.0 for g in s["groups"])


@pytest.mark.parametrize("target, round_to", [(0.8, 1), (0.6, 1), (0.6, 8), (0.7, 16)])
def test_allocation_meets_target_and_rounding(mobilenet, mobilenet_analysis, target, round_to):
    details = {}
    counts = allocate_from_sensitivity(mobilenet, target, analysis=mobilenet_analysis, round_to=round_to,
                                       max_ratio=0.9, details=details)
    a = mobilenet_analysis
    cost = CostModel(a)
    kept = {r: k for gid, k in counts.items() for r in a.group(gid).roots}
    ratio = cost.macs(counter(a, kept)) / cost.macs(counter(a, {}))
    assert ratio <= target + 1e-9 and ratio == pytest.approx(details["macs_ratio"])
    if round_to == 1:
        assert ratio >= target - 0.02  # fine steps land just under the target
    for gid, k in counts.items():
        size = a.group(gid).size
        assert k < size and allowed_count(k, size, round_to, 1, 0.9) == k
    assert details["predicted_drop"] >= 0 and details["groups_pruned"] == len(counts)


def test_allocation_from_model_path_and_out_of_reach(mobilenet, mobilenet_analysis):
    a = allocate_from_sensitivity(mobilenet, 0.7, analysis=mobilenet_analysis)
    assert allocate_from_sensitivity(mobilenet, 0.7, model=MOBILENET) == a
    with pytest.raises(errors.BadArgumentError, match="out of reach"):
        allocate_from_sensitivity(mobilenet, 0.05, analysis=mobilenet_analysis)
    with pytest.raises(errors.PlanError):
        allocate_from_sensitivity(mobilenet, 0.7, model=RESNET)


def test_sweep_with_target_measures_the_combined_model():
    s = sweep(RESNET, ratios=(0.3, 0.7), target_macs=0.7, round_to=1)
    a = s["allocation"]
    assert a["macs_ratio"] <= 0.7 and a["counts"]
    assert 0.0 <= a["measured_value"] <= 1.0 and a["measured_drop"] == pytest.approx(1 - a["measured_value"])


def cli(capsys, *args):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_out_and_table(tmp_path, capsys):
    out = tmp_path / "sens.json"
    code, stdout, err = cli(capsys, "sensitivity", RESNET, "--calib", "random:8", "--ratios", "0.5,0.2",
                            "--json", "--out", out)
    assert code == 0, err
    data = json.loads(stdout)
    assert data["settings"]["ratios"] == [0.2, 0.5]
    assert json.loads(out.read_text())["groups"] == data["groups"]
    code, stdout, err = cli(capsys, "sensitivity", RESNET, "--calib", "random:8", "--ratios", "0.5",
                            "--groups", "0,3", "--target-macs", "0.8", "--round-to", "1")
    assert code == 0, err
    lines = stdout.splitlines()
    assert "r=0.5" in lines[1] and lines[2].split()[0] == "0" and lines[3].split()[0] == "3"
    assert "predicted" in lines[-1] and "measured" in lines[-1]


def assert_one_line(code, err, expected, fragment):
    assert code == expected, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0]


@pytest.mark.parametrize("ratios", ["1.5", "abc", "0.2,,0.3", "-0.1", "nan"])
def test_cli_bad_ratios(tmp_path, capsys, ratios):
    out = tmp_path / "s.json"
    code, _, err = cli(capsys, "sensitivity", RESNET, "--calib", "random:8", "--ratios", ratios, "--out", out)
    assert_one_line(code, err, errors.EXIT_BAD_ARGUMENT, "--ratios")
    assert not out.exists()


def test_cli_bad_group_and_metric(capsys):
    code, _, err = cli(capsys, "sensitivity", RESNET, "--calib", "random:8", "--groups", "999")
    assert_one_line(code, err, errors.EXIT_BAD_ARGUMENT, "no group 999")
    code, _, err = cli(capsys, "sensitivity", RESNET, "--calib", "random:8", "--metric", "accuracy")
    assert_one_line(code, err, errors.EXIT_BAD_ARGUMENT, "needs labels")


def test_cli_plot_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    code, _, err = cli(capsys, "sensitivity", RESNET, "--calib", "random:8", "--plot", png, "--out", out)
    assert_one_line(code, err, errors.EXIT_BAD_ARGUMENT, "--plot needs matplotlib (pip install 'onnxprune[plot]')")
    assert not png.exists() and not out.exists()


def test_cli_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "s.png"
    code, _, err = cli(capsys, "sensitivity", RESNET, "--calib", "random:8", "--ratios", "0.3,0.6", "--plot", png,
                       "-q")
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prune_with_sensitivity_allocation_meets_the_target():
    import onnxprune
    from onnxprune.errors import BadArgumentError

    x = np.random.default_rng(3).standard_normal((16, 3, 32, 32)).astype(np.float32)
    r = onnxprune.prune(str(MODELS / "resnet_basic_bn.onnx"), target_macs=0.7, allocation="sensitivity",
                        sensitivity_ratios=(0.2, 0.5), calibration={"input": x}, recover=False, round_to=1)
    assert r.report["macs_ratio"] <= 0.7
    assert r.plan.settings["strategy"] == "sensitivity+target-macs"
    assert r.plan.settings["sensitivity_ratios"] == [0.2, 0.5]
    curves = r.report["sensitivity"]
    assert {p["x"] for p in curves["points"]} == {0.0, 0.2, 0.5}
    assert len({p["label"] for p in curves["points"]}) == len(r.report["groups"]) - sum(
        1 for g in r.report["groups"] if not g["prunable"])
    import jsonschema
    from importlib import resources

    from onnxprune.html import render_html
    from onnxprune.report import REPORT_SCHEMA

    schema = json.loads(resources.files("onnxprune").joinpath(REPORT_SCHEMA).read_text())
    jsonschema.validate(json.loads(json.dumps(r.report, allow_nan=False)), schema)
    page = render_html(r.report)
    assert '<section id="sensitivity">' in page and "<svg" in page.split('<section id="sensitivity">')[1]
    with pytest.raises(BadArgumentError, match="needs a MACs target"):
        onnxprune.prune(str(MODELS / "resnet_basic_bn.onnx"), ratio=0.3, allocation="sensitivity")


# ---- cross-validation (--folds) --------------------------------------------------------

def labelled(n=12, seed=5):
    rng = np.random.default_rng(seed)
    return {"input": rng.standard_normal((n, 3, 32, 32)).astype(np.float32), "y": rng.integers(0, 10, n)}


def test_split_folds_deals_samples_round_robin():
    from onnxprune.sensitivity import split_folds

    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    batches = [{"x": x[i:i + 4]} for i in range(0, 10, 4)]
    folds = split_folds(batches, np.arange(10) + 100, 3, 1, 2)
    assert [np.concatenate([b["x"] for b in f[0]]).ravel().tolist() for f in folds] == \
        [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [f[1].tolist() for f in folds] == [[100, 103, 106, 109], [101, 104, 107], [102, 105, 108]]
    assert [len(b["x"]) for b in folds[0][0]] == [2, 2]  # re-batched by the batch size
    whole = split_folds(batches, None, 2, 5, 5)  # a model fixing batches of 5 deals whole batches
    assert [np.concatenate([b["x"] for b in f[0]]).ravel().tolist() for f in whole] == \
        [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]] and whole[0][1] is None
    with pytest.raises(errors.BadArgumentError, match="--folds 3 needs at least 3 batches of 5 samples"):
        split_folds(batches, None, 3, 5, 5)
    with pytest.raises(errors.BadArgumentError, match="--folds 11 needs at least 11 samples"):
        split_folds(batches, None, 11, 1, 4)


@pytest.mark.parametrize("folds", [0, -2, 1.5, True])
def test_folds_must_be_a_positive_integer(folds):
    with pytest.raises(errors.BadArgumentError, match="folds must be an integer"):
        sweep(RESNET, labelled(), folds=folds, labels="y")


def test_weight_criterion_folds_only_split_the_measurement():
    """l2 keeps the same channels in every fold; agreement is a mean over samples, so the
    fold-size-weighted mean equals the all-data value and the folds show the spread."""
    kw = dict(ratios=(0.3, 0.7), labels="y", groups=[0, 3], batch_size=4)
    whole = sweep(RESNET, labelled(), **kw)
    cv = sweep(RESNET, labelled(), folds=3, **kw)
    assert cv["settings"]["folds"] == 3 and cv["fold_samples"] == [4, 4, 4] and cv["samples"] == 12
    assert cv["candidates"] == whole["candidates"] and cv["dense"]["value"] == pytest.approx(1.0)
    for g_cv, g in zip(cv["groups"], whole["groups"]):
        for p_cv, p in zip(g_cv["points"], g["points"]):
            assert p_cv["drop"] == pytest.approx(p["drop"], abs=1e-12) and len(p_cv["fold_drops"]) == 3
            assert p_cv["drop"] == pytest.approx(np.mean(p_cv["fold_drops"]))
            assert "fold_drops" not in p


def test_data_aware_folds_choose_channels_on_the_rest_and_measure_on_the_held_out_fold():
    from onnxprune.allocate import select_channels
    from onnxprune.runtime import session
    from onnxprune.sensitivity import Sweep, evaluate_plan, run_batches

    data = labelled(12)
    opts = dict(criterion="activation", metric="cosine", labels="y", batch_size=4, max_samples=None,
                input_shapes=None, device="cpu", progress=False, reduction="sum", normalize="mean", loss="auto",
                fallback_criterion=None, prune_norm_spaces=False, image_options=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cv = Sweep(str(RESNET), data, folds=2, **opts)
        rest = Sweep(str(RESNET), {"input": data["input"][1::2], "y": data["y"][1::2]}, **opts)  # fold 1
    gid = 3
    g = cv.analysis.group(gid)
    for a, b in zip(cv.fold_scores[0][gid], rest.scores[gid]):
        np.testing.assert_allclose(a, b, rtol=1e-5)  # fold 0's scores: statistics of fold 1 alone
    k = g.size // 2
    keep = select_channels(g, rest.scores[gid], k)
    assert cv.plan_groups({gid: k}, 0) == {gid: keep}
    held = [{"input": data["input"][0::2][i:i + 4]} for i in (0, 4)]  # fold 0: samples 0, 2, 4...
    dense = run_batches(session(str(RESNET), "cpu"), held)
    value, drop = evaluate_plan(cv.analysis, {gid: keep}, held, dense, data["y"][0::2], "cosine", "cpu")
    (v, d, fold_drops), = cv.evaluate({"c": {gid: k}}).values()
    assert fold_drops[0] == pytest.approx(drop, rel=1e-6)
    assert d == pytest.approx(np.mean(fold_drops)) and v == pytest.approx(1 - d)


def test_cross_validated_sweep_in_processes_equals_serial():
    kw = dict(criterion="activation", ratios=(0.5,), metric="cosine", labels="y", groups=[1, 4], batch_size=4,
              folds=2, target_macs=0.9, round_to=1)
    serial = sweep(RESNET, labelled(), **kw)
    assert comparable(sweep(RESNET, labelled(), jobs=2, **kw)) == comparable(serial)
    a = serial["allocation"]
    assert len(a["measured_fold_drops"]) == 2 and a["measured_drop"] == pytest.approx(np.mean(a["measured_fold_drops"]))


def test_cli_folds(tmp_path, capsys):
    code, stdout, err = cli(capsys, "sensitivity", RESNET, "--calib", "random:8", "--ratios", "0.5", "--groups", "0",
                            "--folds", "2")
    assert code == 0, err
    assert "2-fold cross-validated" in stdout.splitlines()[0]
    code, _, err = cli(capsys, "sensitivity", RESNET, "--calib", "random:8", "--folds", "9")
    assert_one_line(code, err, errors.EXIT_BAD_ARGUMENT, "--folds 9 needs at least 9 samples")
    code, _, err = cli(capsys, "sensitivity", RESNET, "--calib", "random:8", "--folds", "0")
    assert_one_line(code, err, errors.EXIT_BAD_ARGUMENT, "folds must be an integer >= 1")
    code, _, err = cli(capsys, "prune", RESNET, "-o", tmp_path / "s.onnx", "--ratio", "0.3", "--folds", "2")
    assert_one_line(code, err, errors.EXIT_BAD_ARGUMENT, "--allocation sensitivity")
    assert not (tmp_path / "s.onnx").exists()


def test_prune_with_cross_validated_sensitivity_allocation():
    import onnxprune

    r = onnxprune.prune(str(RESNET), target_macs=0.7, allocation="sensitivity", sensitivity_ratios=(0.3, 0.6),
                        calibration={"input": labelled(8)["input"]}, recover=False, round_to=1, folds=2)
    assert r.report["macs_ratio"] <= 0.7 and r.plan.settings["sensitivity_folds"] == 2
