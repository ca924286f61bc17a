"""The hidden size through embeddings (``prune_norm_spaces``): word/position/token-type
tables read by Gather, a position table sliced or added as a constant, a ViT class token
expanded over the batch, ORT's EmbedLayerNormalization, RMSNorm's ReduceMean, and a tied
LM head (the embedding table read twice) are members of the hidden-size space.

The fixtures end in the hidden state (a graph output, never pruned), so each test puts a
linear head on it (:func:`tests.oracle_norm.with_head`). The oracle is the masked-norm one
(:mod:`tests.oracle_norm`), ORT's SkipLayerNormalization and EmbedLayerNormalization
included."""

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.analysis import AnalysisOptions, analyze
from onnxprune.analysis.context import OUT
from onnxprune.cost import CostModel, count_macs
from onnxprune.runtime import random_inputs, session
from tests.analysis.test_transformer_graphs import _shapes
from tests.conftest import MODELS
from tests.oracle import feeds_for
from tests.oracle_norm import check_norm_group, with_head

T = MODELS / "transformers"
ALL = sorted(T.glob("*.onnx"))
NORM = AnalysisOptions(prune_norm_spaces=True)


def _hidden(analysis):
    return [g for g in analysis.groups if g.size == 32]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_hidden_size_with_embeddings_passes_the_masked_oracle(path):
    model = with_head(onnx.load(str(path)))
    analysis = analyze(model, NORM)
    [group] = _hidden(analysis)
    assert group.prunable and group.inexact, group.blocked
    tables = [m for m in group.members if m.role == OUT and m.op in ("Gather", "Expand", "EmbedLayerNormalization")]
    assert tables, "no embedding table is a member"
    feeds = feeds_for(model)
    pruned, reference = check_norm_group(analysis, group, feeds)
    onnx.checker.check_model(pruned, full_check=True)
    assert [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in pruned.graph.input] == \
        [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    # not vacuous: the removed channels carried signal
    a, b = session(model).run(None, feeds)[0], session(reference).run(None, feeds)[0]
    assert not np.allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["gpt2_tiny", "llama_tiny_dynamo", "bert_tiny"])
def test_tied_lm_head_slices_the_shared_table_once(name):
    model = with_head(onnx.load(str(T / f"{name}.onnx")))
    table = next(n.input[0] for n in model.graph.node if n.name == "lm_head_T")
    result = onnxprune.prune(model, ratio=0.25, round_to=1, prune_norm_spaces=True)
    pruned = result.model
    tables = [t for t in pruned.graph.initializer if t.name.startswith(table)]
    assert [list(t.dims) for t in tables] == [[100, 24]]
    readers = [n.op_type for n in pruned.graph.node if table in n.input]
    assert sorted(readers) == ["Gather", "Transpose"]
    feeds = random_inputs(model, batch=2)
    assert session(pruned).run(None, feeds)[0].shape == session(model).run(None, feeds)[0].shape


def test_macs_predicted_equal_measured_with_the_hidden_size():
    model = with_head(onnx.load(str(T / "gpt2_tiny_dynamo.onnx")))
    shapes = _shapes(model)
    result = onnxprune.prune(model, ratio=0.5, round_to=1, input_shapes=shapes, prune_norm_spaces=True)
    analysis = analyze(model, AnalysisOptions(prune_norm_spaces=True, input_shapes=shapes))
    cost, table = CostModel(analysis), analysis.table
    kept = {r: len(k) for gid, g in result.plan.groups.items() for r, k in zip(analysis.group(gid).roots, g["keep"])}
    assert any(analysis.group(gid).size == 32 for gid in result.plan.groups)
    assert cost.macs(lambda s: kept.get(table.find(s), table.size(s))) == count_macs(result.model, shapes)


def test_fused_embed_layer_norm_joins_the_hidden_size():
    model = with_head(onnx.load(str(T / "bert_tiny_fused.onnx")))
    analysis = analyze(model, NORM)
    [group] = _hidden(analysis)
    assert group.prunable and any("EmbedLayerNormalization" in r for r in group.inexact)
    members = {(m.node, m.tensor) for m in group.members if m.op == "EmbedLayerNormalization"}
    assert len(members) == 5  # word, position, segment tables, gamma, beta
    result = onnxprune.prune(model, ratio=0.25, round_to=1, prune_norm_spaces=True)
    onnx.checker.check_model(result.model, full_check=True)
    feeds = random_inputs(model, batch=2)
    assert session(result.model).run(None, feeds)[0].shape == session(model).run(None, feeds)[0].shape


def test_without_the_option_embeddings_and_rms_norm_block_with_reasons():
    llama = analyze(with_head(onnx.load(str(T / "llama_tiny.onnx"))))
    [group] = _hidden(llama)
    assert not group.prunable
    assert any("ReduceMean" in r and "--prune-norm-spaces" in r for r in group.blocked), group.blocked
    fused = analyze(with_head(onnx.load(str(T / "bert_tiny_fused.onnx"))))
    reasons = [r for g in _hidden(fused) for r in g.blocked]
    assert any("embedding tables" in r and "--prune-norm-spaces" in r for r in reasons), reasons


def _sliced_position_table_model() -> onnx.ModelProto:
    """Word embeddings + a position table sliced to the sequence length (Slice on axis 0,
    ends read from the input's shape), LayerNorm, then a projection to 8 outputs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
            for n, s in (("word", (50, 16)), ("pos", (32, 16)), ("gamma", (16,)), ("beta", (16,)), ("proj", (16, 8)))]
    init += [numpy_helper.from_array(np.array(v, np.int64), n)
             for n, v in (("zero", [0]), ("axis0", [0]), ("one", 1))]
    nodes = [
        helper.make_node("Gather", ["word", "ids"], ["tok"], name="word_embeddings"),
        helper.make_node("Shape", ["ids"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "one"], ["seq"], name="seq_len", axis=0),
        helper.make_node("Unsqueeze", ["seq", "axis0"], ["end"], name="end"),
        helper.make_node("Slice", ["pos", "zero", "end", "axis0"], ["positions"], name="position_embeddings"),
        helper.make_node("Add", ["tok", "positions"], ["emb"], name="add_positions"),
        helper.make_node("LayerNormalization", ["emb", "gamma", "beta"], ["norm"], name="ln", axis=-1),
        helper.make_node("MatMul", ["norm", "proj"], ["out"], name="head"),
    ]
    graph = helper.make_graph(nodes, "sliced_positions",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", 8])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_position_table_sliced_to_the_sequence_joins_the_hidden_size():
    model = _sliced_position_table_model()
    onnx.checker.check_model(model, full_check=True)
    analysis = analyze(model, NORM)
    [group] = [g for g in analysis.groups if g.size == 16]
    assert group.prunable, group.blocked
    assert {m.node for m in group.members if m.role == OUT} >= {"word_embeddings", "position_embeddings"}
    feeds = {"ids": np.random.default_rng(1).integers(0, 50, (2, 7)).astype(np.int64)}
    pruned, _ = check_norm_group(analysis, group, feeds)
    tables = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert tables["pos"][1] < 16 and tables["pos"][1] == tables["word"][1]
    assert session(pruned).run(None, {"ids": feeds["ids"][:, :5]})[0].shape == (2, 5, 8)  # sequence still dynamic
    assert not any(g.size == 16 and g.prunable for g in analyze(model).groups)  # only with the option
