"""Constants reached through Identity nodes (the TorchScript exporter shares equal
initializers that way) are constants for the repair and for OBS."""

from __future__ import annotations

import warnings

import numpy as np
import onnx

import onnxprune
from onnxprune.recover.graphs import GraphIndex

from ..conftest import MODELS

GPT2 = MODELS / "transformers" / "gpt2_tiny.onnx"


def test_gpt2_projection_biases_are_identity_copies_and_count_as_constants():
    model = onnx.load(str(GPT2))
    index = GraphIndex(model)
    gemm = index.node["/m/h.0/attn/c_proj/Gemm"]
    assert index.producer[gemm.input[2]].op_type == "Identity"  # what the fixture holds
    assert index.is_const(gemm.input[2])
    assert index.const(gemm.input[2]).shape == (32,)


def test_gpt2_output_projections_are_repaired_and_obs_scores_them():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = onnxprune.prune(str(GPT2), ratio=0.25, criterion="obs", calibration="random:8", round_to=1,
                            progress=False)
    layers = r.report["recovery"]["layers"]
    proj = {k: v for k, v in layers.items() if k.endswith("c_proj/Gemm")}
    assert proj and all(v["choice"] == "reconstruct" for v in proj.values())
    assert all(v["error_after"] < v["error_before"] for v in proj.values())
    assert r.report["validation"]["passed"]
    onnx.checker.check_model(r.model, full_check=True)
    assert not np.isnan(r.report["validation"]["outputs"][0]["snr_db"])
