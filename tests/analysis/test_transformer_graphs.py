"""Transformer graphs as a whole: ONNX Runtime-fused fixtures (com.microsoft Attention,
MultiHeadAttention, SkipLayerNormalization, BiasGelu/FastGelu, EmbedLayerNormalization),
group labels, and the cost model's MACs at a concrete sequence length (attention scores
shrink with the heads)."""

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.analysis import AnalysisOptions, analyze
from onnxprune.cost import CostModel, count_macs
from onnxprune.runtime import random_inputs, session
from tests.conftest import MODELS

TRANSFORMERS = sorted((MODELS / "transformers").glob("*.onnx"))
FUSED = [MODELS / "transformers" / "bert_tiny_fused.onnx", MODELS / "transformers" / "bert_tiny_fused_mha.onnx"]


def _shapes(model, seq=16, batch=2):
    """Concrete input shapes: the declared dims, dynamic ones set to ``batch`` (leading) or
    ``seq`` (token inputs are [batch, seq]; image inputs have only a dynamic batch)."""
    init = {t.name for t in model.graph.initializer}
    shapes = {}
    for i in model.graph.input:
        if i.name in init:
            continue
        dims = i.type.tensor_type.shape.dim
        shapes[i.name] = [d.dim_value if d.HasField("dim_value") else (batch if k == 0 else seq)
                          for k, d in enumerate(dims)]
    return shapes


@pytest.mark.parametrize("path", FUSED, ids=lambda p: p.stem)
def test_fused_fixture_inspect_lists_heads_ffn_and_why_the_hidden_size_is_blocked(path):
    info = onnxprune.inspect(str(path))
    groups = info["groups"]
    heads = [g for g in groups if g["kind"] == "attention-heads"]
    assert [g["channels"] for g in heads] == [4, 4] and all(g["prunable"] for g in heads)
    ffn = [g for g in groups if g["prunable"] and g["kind"] != "attention-heads"]
    assert [g["channels"] for g in ffn] == [64, 64]
    reasons = [r for g in groups for r in g["blocked_by"]]
    assert any("SkipLayerNormalization" in r and "normalizes across these channels" in r for r in reasons)
    assert not any("has no channel rule" in r for r in reasons), reasons
    if "mha" not in path.stem:
        assert any(r.startswith("EmbedLayerNormalization") and "embedding tables" in r for r in reasons)


@pytest.mark.parametrize("path", FUSED, ids=lambda p: p.stem)
def test_fused_fixture_prunes_heads_and_ffn_and_runs(path):
    original = onnx.load(str(path))
    shapes = _shapes(original)
    result = onnxprune.prune(original, ratio=0.5, round_to=1, input_shapes=shapes)
    pruned = result.model
    onnx.checker.check_model(pruned, full_check=True)
    heads = [n for n in pruned.graph.node if n.op_type in ("Attention", "MultiHeadAttention")]
    assert [a.i for n in heads for a in n.attribute if a.name == "num_heads"] == [2, 2]
    r = result.report
    assert r["macs_after"] == count_macs(pruned, shapes) == r["macs_before"] // 2
    feeds = random_inputs(original, batch=3)
    assert session(pruned).run(None, feeds)[0].shape == session(original).run(None, feeds)[0].shape


def test_fused_fixture_prunes_with_calibration_and_repair():
    path = FUSED[0]
    model = onnx.load(str(path))
    calib = {"input_ids": np.random.default_rng(0).integers(0, 100, (16, 8)).astype(np.int64)}
    result = onnxprune.prune(model, ratio=0.25, round_to=1, criterion="activation", calibration=calib,
                             input_shapes=_shapes(model), progress=False)
    assert result.report["groups_pruned"] == 4
    assert result.report["recovery"]["layers"]  # the output and down projections were refitted


@pytest.mark.parametrize("path", TRANSFORMERS, ids=lambda p: p.stem)
def test_head_groups_are_labelled_as_heads(path):
    analysis = analyze(onnx.load(str(path)))
    kinds = [g.kind for g in analysis.prunable]
    want = "attention-heads+gqa" if path.stem.startswith("llama") else "attention-heads"
    assert kinds.count(want) == 2, kinds
    assert not any("residual" in k for g, k in zip(analysis.prunable, kinds) if g.size in (2, 4)), kinds


@pytest.mark.parametrize("path", TRANSFORMERS, ids=lambda p: p.stem)
def test_cost_model_counts_attention_scores_shrinking_with_heads(path):
    """At a concrete sequence length the predicted MACs of a plan equal those measured on
    the pruned file, Q·Kᵀ and P·V included."""
    original = onnx.load(str(path))
    shapes = _shapes(original)
    result = onnxprune.prune(original, ratio=0.5, round_to=1, input_shapes=shapes)
    analysis = analyze(original, AnalysisOptions(input_shapes=shapes))
    cost, table = CostModel(analysis), analysis.table
    kept = {}
    for gid, g in result.plan.groups.items():
        for root, k in zip(analysis.group(gid).roots, g["keep"]):
            kept[root] = len(k)
    assert cost.macs(lambda s: table.size(s)) == count_macs(original, shapes)
    assert cost.macs(lambda s: kept.get(table.find(s), table.size(s))) == count_macs(result.model, shapes)
    assert result.report["macs_after"] == count_macs(result.model, shapes)
