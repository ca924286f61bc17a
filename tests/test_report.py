"""Reports follow their published JSON schema."""

import json
from importlib import resources

import jsonschema
import numpy as np
import pytest

import onnxprune
from onnxprune.report import REPORT_SCHEMA
from tests.conftest import MODELS


@pytest.fixture(scope="module")
def schema():
    return json.loads(resources.files("onnxprune").joinpath(REPORT_SCHEMA).read_text())


@pytest.mark.parametrize("name", ["resnet_basic", "unet", "paddle_style"])
def test_prune_report_validates(schema, name):
    report = onnxprune.prune(str(MODELS / f"{name}.onnx"), ratio=0.3).report
    jsonschema.validate(json.loads(json.dumps(report)), schema)


def test_report_with_validation_validates(schema):
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    report = onnxprune.prune(str(MODELS / "resnet_basic.onnx"), ratio=0.3, validation={"input": x}).report
    text = json.dumps(report, allow_nan=False)  # strict JSON: no NaN/Infinity anywhere
    jsonschema.validate(json.loads(text), schema)
    broken = dict(report, version=2)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_report_with_calibration_validates(schema):
    x = np.random.default_rng(0).standard_normal((6, 3, 32, 32)).astype(np.float32)
    report = onnxprune.prune(str(MODELS / "resnet_basic.onnx"), ratio=0.3, criterion="wanda",
                             calibration={"input": x}).report
    assert report["calibration"]["samples"] == 6 and report["calibration"]["statistics"] == ["sumsq"]
    jsonschema.validate(json.loads(json.dumps(report, allow_nan=False)), schema)
