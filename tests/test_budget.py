"""--max-drop alone is a budget: the smallest probed MACs target whose (repaired) model stays
within it on the validation data; with a ratio or target it stays a validation gate."""

import subprocess
import sys

import numpy as np
import pytest

import onnxprune
from onnxprune.budget import smallest_within
from onnxprune.errors import BadArgumentError, ValidationFailed

from .conftest import MODELS

PATH = str(MODELS / "resnet_basic_bn.onnx")


def _data(seed):
    return {"input": np.random.default_rng(seed).standard_normal((16, 3, 32, 32)).astype(np.float32)}


def test_bisection_keeps_the_smallest_target_within_the_budget():
    seen = []

    def counts_at(t):
        seen.append(t)
        return {"t": t}, {"strategy": "global+target-macs"}

    counts, how, report = smallest_within(0.3, counts_at, lambda c: 1.0 - c["t"], lambda c: c["t"], probes=6)
    assert seen == [0.5, 0.75, 0.625, 0.6875, 0.71875, 0.703125]
    assert counts == {"t": 0.703125} and report["target_macs"] == 0.703125
    assert [p["passed"] for p in report["probes"]] == [False, True, False, False, True, True]


def test_out_of_reach_probes_count_as_failures_and_nothing_within_is_an_error():
    def counts_at(t):
        if t < 0.6:
            raise BadArgumentError("out of reach")
        return {"t": t}, {}

    _, _, report = smallest_within(0.5, counts_at, lambda c: 0.0, lambda c: c["t"], probes=3)
    assert report["probes"][0]["macs_fraction"] is None and not report["probes"][0]["passed"]
    assert report["target_macs"] == 0.625
    with pytest.raises(ValidationFailed, match="no pruned model stays within --max-drop 0.01"):
        smallest_within(0.01, counts_at, lambda c: 0.5, lambda c: c["t"], probes=3)


@pytest.mark.parametrize("allocation, recover", [("uniform", False), ("global", True)])
def test_prune_finds_the_smallest_model_within_the_budget(allocation, recover):
    r = onnxprune.prune(PATH, max_drop=0.05, metric="cosine", calibration=_data(0), validation=_data(1),
                        allocation=allocation, recover=recover, round_to=1, budget_probes=5)
    b = r.report["budget"]
    assert b["data"] == "validation" and b["repaired"] is recover and len(b["probes"]) == 5
    passed = [p for p in b["probes"] if p["passed"]]
    assert passed and all(p["drop"] <= 0.05 for p in passed)
    assert b["target_macs"] == min(p["target_macs"] for p in passed)
    assert all(not p["passed"] for p in b["probes"] if p["target_macs"] < b["target_macs"])
    assert r.report["macs_ratio"] <= b["target_macs"] + 1e-9
    assert r.report["validation"]["passed"]  # the written model is the probe that passed
    s = r.plan.settings
    assert s["strategy"] == f"{allocation}+max-drop" and s["max_drop"] == 0.05 and s["target_macs"] == b["target_macs"]


def test_a_ratio_keeps_max_drop_a_gate():
    with pytest.raises(ValidationFailed, match="fails validation"):
        onnxprune.prune(PATH, ratio=0.5, max_drop=0.0, metric="cosine", calibration=_data(0), recover=False)


def test_budget_errors():
    with pytest.raises(BadArgumentError, match="needs data"):
        onnxprune.prune(PATH, max_drop=0.05)
    with pytest.raises(BadArgumentError, match="budget_probes"):
        onnxprune.prune(PATH, max_drop=0.05, calibration=_data(0), budget_probes=0)
    with pytest.raises(BadArgumentError, match="give a pruning ratio, a target or a budget"):
        onnxprune.prune(PATH)
    with pytest.raises(ValidationFailed, match="no pruned model stays within"):
        onnxprune.prune(PATH, max_drop=0.0, metric="cosine", calibration=_data(0), recover=False, budget_probes=2)


def test_cli_budget(tmp_path):
    np.savez(tmp_path / "calib.npz", **_data(0))
    out = tmp_path / "small.onnx"
    cmd = [sys.executable, "-m", "onnxprune", "prune", PATH, "-o", str(out), "--max-drop", "0.5", "--metric",
           "cosine", "--calib", str(tmp_path / "calib.npz"), "--no-recover", "--budget-probes", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "budget  smallest of 4 probes within --max-drop 0.5" in proc.stdout and out.exists()
    proc = subprocess.run(cmd[:-2] + ["--budget-probes", "0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "budget_probes" in proc.stderr
