"""Normalization rules: per-channel norms (BatchNormalization, InstanceNormalization) pass
channels with their parameters as members; norms across channels (LayerNormalization on
the channel axis, GroupNormalization) block unless prune_norm_spaces, then are inexact."""

import numpy as np
import pytest

from tests.rules.graphs import (G, blocked_by, group_of, members, oracle_all, prune, run, run_analysis,
                                shape_of, value)


def _norm_params(g, c, prefix, stats=True):
    scale = g.init((g.rng.uniform(0.5, 1.5, c)).astype(np.float32), prefix + "_scale")
    bias = g.weight([c], prefix + "_bias")
    if not stats:
        return [scale, bias]
    mean = g.weight([c], prefix + "_mean")
    var = g.init((g.rng.uniform(0.5, 2.0, c)).astype(np.float32), prefix + "_var")
    return [scale, bias, mean, var]


def test_batch_norm_params_are_members():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.conv(x, 3, 8, "c1", k=3)
    h = g.op("Relu", [g.op("BatchNormalization", [h] + _norm_params(g, 8, "bn"), "bn")])
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable and not g1.inexact
    roles = {(m.tensor, m.role) for m in g1.members if m.op == "BatchNormalization"}
    assert roles == {("bn_scale", "norm_scale"), ("bn_bias", "norm_bias"), ("bn_mean", "norm_stat"),
                     ("bn_var", "norm_stat")}
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 1, 4, 6]})
    for p in ("bn_scale", "bn_bias", "bn_mean", "bn_var"):
        assert shape_of(new, p) == (4,)
        np.testing.assert_array_equal(value(new, p), value(m, p)[[0, 1, 4, 6]])
    assert shape_of(new, "c2_w") == (4, 4, 1, 1)


def test_batch_norm_training_outputs_block():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.conv(x, 3, 8, "c1", k=3)
    y, rm, rv = g.op("BatchNormalization", [h] + _norm_params(g, 8, "bn"), "bn", n_out=3, training_mode=1)
    g.output(g.conv(y, 8, 4, "c2"))
    g.output(rm)
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert not g1.prunable and blocked_by(g1, "BatchNormalization", "training")


def test_instance_norm():
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    h = g.conv(x, 3, 8, "c1", k=3, bias=True)
    h = g.op("Relu", [g.op("InstanceNormalization", [h] + _norm_params(g, 8, "in", stats=False), "in")])
    g.output(g.conv(h, 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable
    assert members(g1, "in_scale", "norm_scale") and members(g1, "in_bias", "norm_bias")
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [2, 3, 5]})
    assert shape_of(new, "in_scale") == (3,) and shape_of(new, "in_bias") == (3,)


def _layer_norm_on_channels():
    g = G()
    x = g.input("x", [2, 5, 6])
    h = g.op("MatMul", [x, g.weight([6, 8], "m1_w")], "m1")
    h = g.op("LayerNormalization", [h] + _norm_params(g, 8, "ln", stats=False), "ln", axis=-1)
    g.output(g.op("MatMul", [g.op("Relu", [h]), g.weight([8, 4], "m2_w")], "m2"))
    return g.model()


def test_layer_norm_over_channels_blocks_by_default():
    m = _layer_norm_on_channels()
    a = run_analysis(m)
    g1 = group_of(a, "m1")
    assert not g1.prunable
    assert blocked_by(g1, "LayerNormalization", "ln")
    assert a.prunable == []


def test_layer_norm_over_channels_inexact_when_allowed():
    m = _layer_norm_on_channels()
    a = run_analysis(m, prune_norm_spaces=True)
    g1 = group_of(a, "m1")
    assert g1.prunable and g1.inexact
    assert any("LayerNormalization" in r for r in g1.inexact)
    assert members(g1, "ln_scale", "norm_scale") and members(g1, "ln_bias", "norm_bias")
    new = prune(a, {g1.id: [0, 1, 2, 6, 7]})
    assert shape_of(new, "ln_scale") == (5,) and shape_of(new, "ln_bias") == (5,)
    assert shape_of(new, "m1_w") == (6, 5) and shape_of(new, "m2_w") == (5, 4)
    assert run(new)[0].shape == (2, 5, 4)


def test_layer_norm_over_non_channel_axes_passes():
    g = G()
    x = g.input("x", [1, 3, 4, 4])
    h = g.conv(x, 3, 8, "c1", k=3)
    ln_w = g.init(g.rng.uniform(0.5, 1.5, (4, 4)).astype(np.float32), "ln_scale")
    h = g.op("LayerNormalization", [h, ln_w, g.weight([4, 4], "ln_bias")], "ln", axis=2)
    g.output(g.conv(g.op("Relu", [h]), 8, 4, "c2"))
    m = g.model()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert g1.prunable and not g1.inexact
    assert not any(m.op == "LayerNormalization" for m in g1.members)
    assert oracle_all(a, m) == 1
    new = prune(a, {g1.id: [0, 7]})
    assert shape_of(new, "ln_scale") == (4, 4)
    assert shape_of(new, "c2_w") == (4, 2, 1, 1)


def _group_norm():
    g = G(opset=21)
    x = g.input("x", [1, 3, 6, 6])
    h = g.conv(x, 3, 8, "c1", k=3)
    h = g.op("GroupNormalization", [h] + _norm_params(g, 8, "gn", stats=False), "gn", num_groups=2)
    g.output(g.conv(g.op("Relu", [h]), 8, 4, "c2"), [1, 4, 6, 6])  # onnx does not infer past it
    return g.model()


def test_group_norm_blocks_by_default():
    m = _group_norm()
    a = run_analysis(m)
    g1 = group_of(a, "c1")
    assert not g1.prunable and blocked_by(g1, "GroupNormalization", "gn")


def test_group_norm_tied_and_inexact_when_allowed():
    m = _group_norm()
    a = run_analysis(m, prune_norm_spaces=True)
    g1 = group_of(a, "c1")
    assert g1.prunable and g1.inexact
    assert len(g1.roots) == 2 and g1.size == 4
    new = prune(a, {g1.id: [[0, 1, 3], [1, 2, 3]]})
    assert shape_of(new, "gn_scale") == (6,) and shape_of(new, "gn_bias") == (6,)
    assert shape_of(new, "c1_w") == (6, 3, 3, 3)
    assert run(new)[0].shape == (1, 4, 6, 6)


@pytest.mark.parametrize("allowed", [False, True])
def test_group_norm_with_fixed_input_adds_no_group(allowed):
    g = G(opset=21)
    x = g.input("x", [1, 8, 6, 6])
    h = g.op("GroupNormalization", [x] + _norm_params(g, 8, "gn", stats=False), "gn", num_groups=2)
    g.output(g.conv(h, 8, 4, "c2"), [1, 4, 6, 6])
    a = run_analysis(g.model(), prune_norm_spaces=allowed)
    assert not any(m.op == "GroupNormalization" for gr in a.groups for m in gr.members)
