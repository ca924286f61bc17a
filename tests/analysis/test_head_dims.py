"""``head_mode="dims"`` (CLI ``--attention head-dims``): the same head-dim indices removed
inside every head. Q and K lose the same dims (a group read only by Q·Kᵀ), V and the output
projection the same dims; with rotary embeddings (Llama) the Q/K channels are the rotation
pairs (i, i + d/2), the frequency table sliced with them;
reshape targets are rewritten (fused ORT attention: ``qkv_hidden_sizes`` and a pinned
``scale``), MACs of Q·Kᵀ and P·V shrink, plans reproduce the mode."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import onnxprune
from onnxprune.analysis import AnalysisOptions, analyze
from onnxprune.cli import cli
from onnxprune.cost import CostModel, count_macs
from onnxprune.errors import BadArgumentError
from onnxprune.runtime import random_inputs, session
from tests.analysis.test_transformer_graphs import _shapes
from tests.conftest import MODELS
from tests.oracle import check_group, choose_removed, feeds_for, zero_contributions

T = MODELS / "transformers"
ALL = sorted(T.glob("*.onnx"))
DIMS = AnalysisOptions(head_mode="dims")


def _dims_groups(analysis, which):
    return [g for g in analysis.groups if g.kind == f"attention-head-dims({which})"]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_head_dims_groups_per_layer(path):
    analysis = analyze(onnx.load(str(path)), DIMS)
    qk, vo = _dims_groups(analysis, "qk"), _dims_groups(analysis, "vo")
    assert [g.size for g in vo] == [8, 8] and all(g.prunable and not g.inexact for g in vo)
    assert not any(g.kind.startswith("attention-heads") for g in analysis.groups)
    assert all(g.prunable and not g.inexact for g in qk), [g.blocked for g in qk]
    if path.stem.startswith("llama"):
        # rotary embeddings: channels are the pairs (i, i + 4) of every head, and one
        # frequency table drives both layers, so their Q/K keep the same pairs
        assert [g.size for g in qk] == [4]
        assert any(m.role == "const" and m.op == "Mul" for m in qk[0].members)  # inv_freq
    else:
        assert [g.size for g in qk] == [8, 8]


def test_rotary_pairs_are_kept_together():
    model = onnx.load(str(T / "llama_tiny.onnx"))
    analysis = analyze(model, DIMS)
    [qk] = _dims_groups(analysis, "qk")
    from onnxprune.plan import Plan
    from onnxprune.surgery import apply_plan

    pruned = apply_plan(analysis, Plan("t", {qk.id: {"size": 4, "keep": [[0, 2, 3]]}}, {}))
    onnx.checker.check_model(pruned, full_check=True)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
    dense = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    q = next(n for n in pruned.graph.node if n.name == "/m/layers.0/self_attn/q_proj/MatMul").input[1]
    kept = [h * 8 + d for h in range(4) for d in (0, 2, 3, 4, 6, 7)]  # pairs 0, 2, 3 of each head
    np.testing.assert_array_equal(inits[q], dense[q][:, kept])
    freqs = [onnx.numpy_helper.to_array(a.t) for n in pruned.graph.node if n.op_type == "Constant"
             for a in n.attribute if a.t.dims == [3]]
    np.testing.assert_allclose(freqs[0], [1.0, 0.01, 0.001], rtol=1e-6)  # inv_freq sliced with the pairs


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_head_dims_pass_the_dead_channel_oracle(path):
    model = onnx.load(str(path))
    analysis = analyze(model, DIMS)
    feeds = feeds_for(model)
    original = session(analysis.model).run(None, feeds)
    groups = [g for g in analysis.prunable if g.kind.startswith("attention-head-dims")]
    assert groups
    for group in groups:
        pruned = check_group(analysis, group, feeds)
        onnx.checker.check_model(pruned, full_check=True)
        dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in pruned.graph.input]
        assert dims == [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                        for i in model.graph.input]
        # not vacuous: zeroing the chosen dims changes the outputs
        zeroed = session(zero_contributions(analysis, group, choose_removed(group, 0))).run(None, feeds)
        assert any(not np.allclose(a, b, rtol=1e-6, atol=1e-7) for a, b in zip(original, zeroed)), group.kind


@pytest.mark.parametrize("path", [T / "gpt2_tiny.onnx", T / "llama_tiny_dynamo.onnx", T / "vit_tiny.onnx",
                                  T / "bert_tiny_fused.onnx", T / "bert_tiny_fused_mha.onnx"],
                         ids=lambda p: p.stem)
def test_head_dims_macs_predicted_equal_measured(path):
    original = onnx.load(str(path))
    shapes = _shapes(original)
    result = onnxprune.prune(original, ratio=0.5, round_to=1, input_shapes=shapes, head_mode="dims")
    assert result.plan.settings["head_mode"] == "dims"
    analysis = analyze(original, AnalysisOptions(input_shapes=shapes, head_mode="dims"))
    cost, table = CostModel(analysis), analysis.table
    kept = {r: len(k) for gid, g in result.plan.groups.items() for r, k in zip(analysis.group(gid).roots, g["keep"])}
    assert cost.macs(lambda s: table.size(s)) == count_macs(original, shapes)
    assert cost.macs(lambda s: kept.get(table.find(s), table.size(s))) == count_macs(result.model, shapes)
    assert result.report["macs_after"] == count_macs(result.model, shapes) < result.report["macs_before"]
    feeds = random_inputs(original, batch=3)
    assert session(result.model).run(None, feeds)[0].shape == session(original).run(None, feeds)[0].shape
    again = onnxprune.apply(original, result.plan.to_json(), input_shapes=shapes)  # the plan carries the mode
    assert again.model.SerializeToString() == result.model.SerializeToString()


def test_head_dims_shrink_the_score_matmuls():
    """Q·Kᵀ contracts over 4 kept dims per head, P·V yields 4 per head, 4 heads stay."""
    model = onnx.load(str(T / "bert_tiny.onnx"))
    result = onnxprune.prune(model, ratio=0.5, round_to=1, head_mode="dims")
    from onnxprune.shapes import infer_shapes

    shapes = infer_shapes(result.model)
    scores = [n for n in result.model.graph.node if n.op_type == "MatMul"
              and not any(i in {t.name for t in result.model.graph.initializer} for i in n.input)]
    qk = [shapes.get(n.input[0]) for n in scores[::2]]
    assert all(s is not None and s[1] == 4 and s[-1] == 4 for s in qk), qk


@pytest.mark.parametrize("name", ["bert_tiny_fused", "bert_tiny_fused_mha"])
def test_fused_attention_prunes_head_dims_with_pinned_scale(name):
    """num_heads stays 4; Q/K keep 6 dims per head and V 4 (Attention: qkv_hidden_sizes
    [24, 24, 16]); the scale stays 1/sqrt(8); ONNX Runtime runs it."""
    model = onnx.load(str(T / f"{name}.onnx"))
    analysis = analyze(model, DIMS)
    from onnxprune.plan import Plan
    from onnxprune.surgery import apply_plan

    keep = {"qk": [0, 1, 2, 4, 5, 7], "vo": [1, 3, 5, 6]}
    groups = {g.id: {"size": 8, "keep": [keep[g.kind[-3:-1]]]} for g in analysis.prunable
              if g.kind.startswith("attention-head-dims")}
    pruned = apply_plan(analysis, Plan("t", groups, {}))
    onnx.checker.check_model(pruned, full_check=True)
    for node in pruned.graph.node:
        if node.op_type in ("Attention", "MultiHeadAttention"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["num_heads"] == 4 and attrs["scale"] == pytest.approx(8 ** -0.5)
            if node.op_type == "Attention":
                assert list(attrs["qkv_hidden_sizes"]) == [24, 24, 16]
    feeds = random_inputs(model, batch=2)
    assert session(pruned).run(None, feeds)[0].shape == session(model).run(None, feeds)[0].shape


def test_bad_head_mode_is_one_error():
    with pytest.raises(BadArgumentError, match="head_mode"):
        onnxprune.inspect(str(T / "bert_tiny.onnx"), head_mode="columns")


def test_cli_attention_option(tmp_path):
    runner = CliRunner()
    path = str(T / "gpt2_tiny.onnx")
    out = runner.invoke(cli, ["inspect", path, "--attention", "head-dims"])
    assert out.exit_code == 0, out.output
    assert "attention-head-dims(qk)" in out.output and "same head-dim indices" in out.output
    info = json.loads(runner.invoke(cli, ["inspect", path, "--attention", "head-dims", "--json"]).output)
    assert info["summary"]["head_mode"] == "dims"
    plan = tmp_path / "plan.json"
    res = runner.invoke(cli, ["prune", path, "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5", "--round-to", "1",
                              "--attention", "head-dims", "--plan-out", str(plan), "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(plan.read_text())["settings"]["head_mode"] == "dims"


@pytest.mark.parametrize("criterion", ["activation", "taylor"])
def test_data_criteria_read_qk_dims_at_the_score_matmul(criterion):
    """Q/K dims have no consumer weight: they are measured at both inputs of Q·Kᵀ."""
    model = onnx.load(str(T / "gpt2_tiny.onnx"))
    calib = {"input_ids": np.random.default_rng(0).integers(0, 100, (8, 8)).astype(np.int64)}
    result = onnxprune.prune(model, ratio=0.25, round_to=1, criterion=criterion, calibration=calib,
                             head_mode="dims", progress=False, recover=False)
    assert result.report["groups_pruned"] == 6  # 2 FFN, 2 Q/K dims, 2 V/O dims
