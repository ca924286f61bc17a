"""Reconstruction-aware selection (OBS): a channel its consumer can rebuild from the others
goes first; scores come for every group, one array per class."""

import copy

import numpy as np
import pytest

from onnxprune.api import _analysis
from onnxprune.model import load_model
from onnxprune.recover.select import obs_scores

from ..conftest import MODELS
from .helpers import dataset, random_dataset
from .test_exact import conv_model, data, gemm_model


@pytest.mark.parametrize("build,producer,free", [(lambda: conv_model(cin=8), "conv1", {1, 3, 5}),
                                                 (lambda: conv_model(duplicate=True, cin=8), "conv1", {2, 5}),
                                                 (lambda: gemm_model(), "fc1", {1, 3, 5})],
                         ids=["conv_combination", "conv_duplicate", "gemm_combination"])
def test_reconstructible_channel_goes_first(build, producer, free):
    model = build()
    a = _analysis(copy.deepcopy(model))
    group = next(g for g in a.prunable if producer in g.producers)
    scores = obs_scores(a, dataset(model, data(model, 64, 0), 16), groups=[group], damp=1e-6)
    (s,) = scores[group.id]
    order = np.argsort(s)
    assert order[0] in free
    assert s[order[0]] < 1e-3 * s[order[1]]


@pytest.mark.parametrize("name", ["resnet_basic_bn", "flatten_head", "matmul_tokens"])
def test_scores_for_every_group(name):
    model = load_model(MODELS / f"{name}.onnx")
    a = _analysis(copy.deepcopy(model))
    scores = obs_scores(a, random_dataset(model, 16, 8))
    assert set(scores) == {g.id for g in a.prunable}
    for g in a.prunable:
        assert len(scores[g.id]) == len(g.roots)
        assert all(s.shape == (g.size,) and np.all(np.isfinite(s)) for s in scores[g.id])
