"""Data-aware criteria: they pick the channels they should, with the values their
definitions give."""

import numpy as np
import pytest

import onnxprune
from onnxprune.analysis import analyze
from onnxprune.calibration.collect import collect
from onnxprune.data import load_data
from onnxprune.errors import BadArgumentError
from onnxprune.importance import NEEDS, score_groups
from onnxprune.importance.activations import channel_entropy

from .test_importance import two_conv_model

ACTIVATION_CRITERIA = ["activation", "apoz", "entropy", "variance", "wanda"]


def dead_channel_model(dead=4):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 3, 1, 1)).astype(np.float32)
    w2 = rng.standard_normal((2, 6, 1, 1)).astype(np.float32)
    w1[dead] = 0  # channel 4 is always zero after the ReLU, yet its consumer weights are large
    w2[:, dead] = 10
    return two_conv_model(w1, w2), w1, w2


def calibrated(model, criteria, n=16, seed=0):
    a = analyze(model)
    x = np.random.default_rng(seed).standard_normal((n, 3, 4, 4)).astype(np.float32)
    needs = tuple(dict.fromkeys(s for c in criteria for s in NEEDS[c]))
    a.calibration = collect(a, a.prunable, load_data({"x": x}, model, batch_size=5), needs, device="cpu")
    return a, x


@pytest.mark.parametrize("crit", ACTIVATION_CRITERIA)
def test_a_dead_channel_scores_lowest(crit):
    model, _, _ = dead_channel_model()
    a, _ = calibrated(model, [crit])
    (g,) = a.prunable
    s = score_groups(a, crit)[g.id][0]
    assert int(np.argmin(s)) == 4
    assert s[4] == pytest.approx(s.min())


def test_wanda_and_variance_values():
    model, w1, w2 = dead_channel_model()
    a, x = calibrated(model, ["wanda", "variance", "activation", "apoz"])
    (g,) = a.prunable
    act = np.maximum(np.einsum("oc,nchw->nohw", w1[:, :, 0, 0], x), 0).astype(np.float64)
    flat = act.transpose(1, 0, 2, 3).reshape(6, -1)
    wanda = np.sqrt((flat ** 2).sum(1)) * np.abs(w2).sum((0, 2, 3))
    variance = flat.var(1) * (w2.astype(np.float64) ** 2).sum((0, 2, 3))
    np.testing.assert_allclose(score_groups(a, "wanda", normalize="none")[g.id][0], wanda, rtol=1e-4)
    np.testing.assert_allclose(score_groups(a, "variance", normalize="none")[g.id][0], variance, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(score_groups(a, "activation", normalize="none")[g.id][0], np.abs(flat).mean(1), rtol=1e-4)
    np.testing.assert_allclose(score_groups(a, "apoz", normalize="none")[g.id][0], (flat > 0).mean(1), rtol=1e-6)


def test_channel_entropy():
    rng = np.random.default_rng(0)
    samples = np.stack([np.full(64, 3.0), rng.uniform(size=64), np.r_[np.zeros(63), 1.0]], axis=1)
    h = channel_entropy(samples)
    assert h[0] == 0.0
    assert h[1] > h[2] > 0
    assert h[1] <= np.log(32) + 1e-9


def test_data_criterion_without_data_is_a_clear_error():
    with pytest.raises(BadArgumentError, match="needs calibration data"):
        onnxprune.prune(dead_channel_model()[0], ratio=0.3, criterion="activation")


@pytest.mark.parametrize("crit", ACTIVATION_CRITERIA)
def test_prune_with_calibration_removes_the_dead_channel(crit):
    model, _, _ = dead_channel_model()
    x = np.random.default_rng(1).standard_normal((8, 3, 4, 4)).astype(np.float32)
    r = onnxprune.prune(model, ratio=1 / 6, criterion=crit, calibration={"x": x}, round_to=1)
    (entry,) = r.plan.groups.values()
    assert 4 not in entry["keep"][0]
    assert r.report["calibration"]["samples"] == 8
    assert r.report["validation"]["samples"] == 8  # validated on the calibration data


def test_cli_offers_every_registered_criterion():
    from onnxprune.cli import CRITERIA
    from onnxprune.importance import CRITERIA as REGISTERED

    assert sorted(CRITERIA) == sorted(REGISTERED)


def _scaled_consumers_loss(a, group, root, channel, factor, x, labels):
    """Cross-entropy (against ``labels``) of the analysis model with channel ``channel`` of
    class ``root`` scaled by ``factor`` at every contracting consumer."""
    import copy

    from onnx import numpy_helper

    from onnxprune.analysis.context import IN
    from onnxprune.analysis.spaces import seg_channel_positions
    from onnxprune.runtime import session

    m = copy.deepcopy(a.model)
    inits = {t.name: t for t in m.graph.initializer}
    for mem in group.members:
        if mem.role != IN:
            continue
        w = a.ctx.store.get(mem.tensor).astype(np.float64).copy()
        offset = 0
        for seg in mem.amap:
            if seg.space is not None and a.table.find(seg.space) == root:
                idx = seg_channel_positions(seg, offset)[channel]
                sl = [slice(None)] * w.ndim
                sl[mem.axis] = idx
                w[tuple(sl)] *= factor
            offset += seg.length
        inits[mem.tensor].CopyFrom(numpy_helper.from_array(w.astype(np.float32), mem.tensor))
    z = session(m, device="cpu").run(None, {"input": x})[0].astype(np.float64)
    z -= z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(x)), labels].sum()


@pytest.mark.parametrize("name", ["efficientnet", "convnext"])
def test_first_order_terms_match_finite_differences(name):
    """Σ a·∂L/∂a of a channel is the derivative of the loss along scaling that channel at
    every contracting consumer: check it against central differences (on fixtures with
    smooth activations: SiLU/sigmoid, GELU/LayerNorm; ReLU and max-pool kinks make
    float32 differences of random-weight models too rough to compare)."""
    from onnxprune.importance.activations import first_order_terms
    from onnxprune.model import load_model
    from onnxprune.runtime import session

    from .conftest import MODELS

    model = load_model(MODELS / f"{name}.onnx")
    a = analyze(model)
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    labels = session(model, device="cpu").run(None, {"input": x})[0].argmax(1)
    a.calibration = collect(a, a.prunable, load_data({"input": x}, model, batch_size=3), ("ag",), device="cpu")
    rng = np.random.default_rng(1)
    checked = 0
    for g in rng.permutation(a.prunable)[:4]:
        terms = first_order_terms(a, g)
        assert not isinstance(terms, str), terms
        total = terms[0].sum(0)
        scale = np.abs(total).max()
        for c in rng.choice(g.size, 2, replace=False):
            h = 1e-2
            fd = (_scaled_consumers_loss(a, g, g.roots[0], c, 1 + h, x, labels)
                  - _scaled_consumers_loss(a, g, g.roots[0], c, 1 - h, x, labels)) / (2 * h)
            assert abs(fd - total[c]) <= 3e-2 * scale + 1e-4, (g.name, c, fd, total[c])
            checked += 1
    assert checked == 2 * min(4, len(a.prunable))


def test_gradient_criteria_pick_a_dead_channel_and_use_labels():
    model, _, _ = dead_channel_model()
    x = np.random.default_rng(1).standard_normal((8, 3, 4, 4)).astype(np.float32)
    for crit in ("taylor", "fisher"):
        a, _ = calibrated(model, [crit])
        (g,) = a.prunable
        s = score_groups(a, crit, normalize="none")[g.id][0]
        assert s[4] == 0.0 and s.min() == 0.0
    y = np.zeros(8, np.int64)
    r = onnxprune.prune(model, ratio=1 / 6, criterion="taylor", calibration={"x": x, "y": y}, labels="y",
                        round_to=1, loss="projection")
    assert r.report["calibration"]["loss"] == ["random projection of 'y'"]


def test_obs_removes_a_duplicated_channel_first():
    """OBS scores a channel by the output error left after its consumers are repaired: an
    exact duplicate of another channel can be compensated completely, so one of the pair
    goes first (a dead channel with large consumer weights need not: the repair's ridge
    toward the dense weights charges for zeroing them)."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 3, 1, 1)).astype(np.float32)
    w2 = rng.standard_normal((2, 6, 1, 1)).astype(np.float32)
    w1[5] = w1[1]
    model = two_conv_model(w1, w2)
    a, _ = calibrated(model, ["obs"], n=32)
    (g,) = a.prunable
    s = score_groups(a, "obs", normalize="none")[g.id][0]
    assert int(np.argmin(s)) in (1, 5), s
    x = np.random.default_rng(1).standard_normal((16, 3, 4, 4)).astype(np.float32)
    from onnxprune.recover import RecoverOptions

    r = onnxprune.prune(model, ratio=1 / 6, criterion="obs", calibration={"x": x}, round_to=1,
                        recover_options=RecoverOptions(ridge=0.0))  # no pull toward dense: exact
    (entry,) = r.plan.groups.values()
    assert {1, 5} - set(entry["keep"][0])
    assert r.report["validation"]["outputs"][0]["max_abs_diff"] < 1e-4
