"""--allocation search: seeded, meets the budget, never worse than the uniform start on
the calibration data."""

import json
from importlib import resources

import jsonschema
import numpy as np
import pytest

import onnxprune
from onnxprune.errors import BadArgumentError
from onnxprune.report import REPORT_SCHEMA

from .conftest import MODELS


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet_basic_bn"])
def test_search_is_seeded_meets_the_budget_and_beats_uniform(name):
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    kw = dict(target_macs=0.6, allocation="search", calibration={"input": x}, recover=False, round_to=1,
              search_candidates=9, metric="cosine")
    a = onnxprune.prune(str(MODELS / f"{name}.onnx"), **kw)
    b = onnxprune.prune(str(MODELS / f"{name}.onnx"), **kw)
    assert a.plan.groups == b.plan.groups  # same seed, same result
    assert a.report["macs_ratio"] <= 0.6
    s = a.plan.settings
    assert s["strategy"] == "search+target-macs" and s["candidates"] == 9 and s["seed"] == 0
    assert s["best_drop"] <= s["uniform_drop"]
    assert len(a.report["search"]) <= 9 and a.report["search"][0]["accepted"]
    assert all(h["macs_fraction"] <= 0.6 for h in a.report["search"])
    schema = json.loads(resources.files("onnxprune").joinpath(REPORT_SCHEMA).read_text())
    jsonschema.validate(json.loads(json.dumps(a.report, allow_nan=False)), schema)


def test_search_needs_a_target_and_data():
    with pytest.raises(BadArgumentError, match="--allocation search needs"):
        onnxprune.prune(str(MODELS / "mobilenetv2.onnx"), ratio=0.3, allocation="search")
