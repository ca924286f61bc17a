"""Dead-channel oracle over every fixture model and every prunable exact group.

The transformer fixtures (``models/transformers/``, dynamic batch and sequence, so no
MACs without input shapes) are covered here, outside the generic fixture list."""

import numpy as np
import onnx
import pytest

from onnxprune.analysis import analyze
from onnxprune.runtime import session
from tests.conftest import MODELS, fixture_paths
from tests.oracle import check_group, choose_removed, feeds_for, zero_contributions


TRANSFORMERS = sorted((MODELS / "transformers").glob("*.onnx"))


@pytest.mark.parametrize("path", fixture_paths() + TRANSFORMERS, ids=lambda p: p.stem)
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


def _head_groups(analysis):
    """Prunable groups whose channels are whole heads (members laid out with inner > 1)."""
    return [g for g in analysis.prunable if any(s.inner > 1 and s.space is not None
                                                for m in g.members for s in m.amap)]


@pytest.mark.parametrize("path", TRANSFORMERS, ids=lambda p: p.stem)
def test_transformer_heads_and_ffn_are_prunable(path):
    """Per layer (2 layers): one FFN group of 64 neurons and one group of attention heads
    (4 heads; with grouped-query attention 2 K/V groups of 2 query heads each)."""
    analysis = analyze(onnx.load(str(path)))
    heads = _head_groups(analysis)
    ffn = [g for g in analysis.prunable if g not in heads]
    assert sorted(g.size for g in ffn) == [64, 64], [g.to_dict()["name"] for g in ffn]
    want = 2 if path.stem.startswith("llama") else 4
    assert [g.size for g in heads] == [want, want]
    for g in heads:
        assert not g.inexact
