"""Dead-channel oracle over every fixture model and every prunable exact group."""

import numpy as np
import onnx
import pytest

from onnxprune.analysis import analyze
from onnxprune.runtime import session
from tests.conftest import fixture_paths
from tests.oracle import check_group, choose_removed, feeds_for, zero_contributions


@pytest.mark.parametrize("path", fixture_paths(), ids=lambda p: p.stem)
def test_every_group_passes_the_dead_channel_oracle(path):
    model = onnx.load(str(path))
    analysis = analyze(model)
    feeds = feeds_for(model)
    exact = [g for g in analysis.prunable if not g.inexact]
    assert exact, f"{path.name}: no prunable group"
    original = session(analysis.model).run(None, feeds)
    changed = 0
    for group in exact:
        pruned = check_group(analysis, group, feeds)
        onnx.checker.check_model(pruned, full_check=True)
        zeroed = session(zero_contributions(analysis, group, choose_removed(group, 0))).run(None, feeds)
        changed += any(not np.allclose(a, b, rtol=1e-6, atol=1e-7) for a, b in zip(original, zeroed))
    # the oracle is not vacuous: zeroing the chosen channels does change the outputs
    assert changed >= max(1, len(exact) // 2), f"{path.name}: zeroing changed outputs for only {changed} groups"
