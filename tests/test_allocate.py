import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.allocate import AllocationOptions, allowed_count, effective_round_to, global_counts, uniform_counts
from onnxprune.analysis import analyze
from onnxprune.importance import score_groups
from tests.conftest import MODELS


@pytest.mark.parametrize("keep, size, round_to, expected", [
    (11.2, 16, 8, 8), (12.5, 16, 8, 16), (5, 64, 8, 8), (45, 64, 8, 48), (3, 10, 8, 4), (7, 7, 8, 7), (0, 16, 1, 2),
    (11.2, 16, 16, 8), (40, 64, 16, 48), (20, 24, 16, 24), (13, 24, 16, 16),
])
def test_allowed_count(keep, size, round_to, expected):
    assert allowed_count(keep, size, round_to, 1, 0.9) == expected


def test_effective_round_to_halves_for_narrow_groups():
    assert [effective_round_to(n, 16) for n in (8, 16, 24, 31, 32, 512)] == [4, 8, 8, 8, 16, 16]
    assert effective_round_to(100, 1) == 1


def test_min_keep_and_cap():
    assert allowed_count(0, 100, 1, 5, 0.99) == 5
    assert allowed_count(0, 100, 1, 1, 0.5) == 50


def test_round_to_respected_by_every_strategy():
    for kwargs in ({"ratio": 0.3}, {"ratio": 0.5, "global_ranking": True}, {"target_macs": 0.6}):
        result = onnxprune.prune(str(MODELS / "resnet_bottleneck.onnx"), round_to=4, **kwargs)
        analysis = analyze(onnx.load(str(MODELS / "resnet_bottleneck.onnx")))
        for gid, g in result.plan.groups.items():
            k = len(g["keep"][0])
            size = analysis.group(gid).size
            assert k % effective_round_to(size, 4) == 0 or k == size


def test_global_prefers_low_scores():
    a = analyze(onnx.load(str(MODELS / "resnet_basic.onnx")))
    groups = a.prunable
    scores = {g.id: [np.full(g.size, 1.0)] for g in groups}
    scores[groups[0].id] = [np.full(groups[0].size, 0.01)]  # one weak group
    counts = global_counts(groups, scores, 0.1, AllocationOptions(round_to=1, max_ratio=0.9))
    assert counts[groups[0].id] < groups[0].size
    assert all(counts[g.id] == g.size for g in groups[1:]) or sum(
        g.size - counts[g.id] for g in groups[1:]) < groups[0].size


def test_uniform_counts():
    a = analyze(onnx.load(str(MODELS / "resnet_basic.onnx")))
    counts = uniform_counts(a.prunable, 0.25, AllocationOptions(round_to=1))
    for g in a.prunable:
        assert counts[g.id] == round(g.size * 0.75)


def test_unreachable_target_is_a_clear_error():
    with pytest.raises(onnxprune.OnnxPruneError, match="out of reach"):
        onnxprune.prune(str(MODELS / "lstm.onnx"), target_macs=0.01)


def test_scores_for_every_criterion_are_finite():
    a = analyze(onnx.load(str(MODELS / "resnet_basic_bn.onnx")))
    for crit in ("l1", "l2", "bn", "fpgm", "connectivity"):
        s = score_groups(a, crit)
        assert set(s) == {g.id for g in a.prunable}
        assert all(np.isfinite(np.concatenate(v)).all() for v in s.values())


def test_target_params_is_met_and_measured_independently():
    import onnxprune
    from onnxprune.cost import count_params
    from onnxprune.model import load_model

    for name in ("resnet_basic_bn", "mobilenetv2", "densenet"):
        path = str(MODELS / f"{name}.onnx")
        r = onnxprune.prune(path, target_params=0.6, round_to=1)
        assert r.plan.settings["strategy"] == "global+target-params"
        measured = count_params(r.model) / count_params(load_model(path))
        assert measured <= 0.6 + 1e-9 and measured > 0.45, (name, measured)


def test_exclude_keeps_matching_groups_whole():
    import onnxprune
    from onnxprune.errors import BadArgumentError, NothingPrunableError

    path = str(MODELS / "resnet_basic_bn.onnx")
    a = analyze(onnx.load(path))
    r = onnxprune.prune(path, ratio=0.5, exclude="layer2", round_to=1)
    assert r.plan.groups
    touched = [g.id for g in a.prunable if any("layer2" in m.node for m in g.members)]
    assert touched and not set(touched) & set(r.plan.groups)
    assert r.plan.settings["exclude"] == "layer2"
    with pytest.raises(BadArgumentError, match="not a regular expression"):
        onnxprune.prune(path, ratio=0.5, exclude="(")
    with pytest.raises(NothingPrunableError, match="matches every prunable group"):
        onnxprune.prune(path, ratio=0.5, exclude=".")
    with pytest.raises(BadArgumentError, match="not both a ratio and a parameters target"):
        onnxprune.prune(path, ratio=0.5, target_params=0.5)


def test_latency_target_bisects_the_measured_ratio():
    """The search itself, with a deterministic stand-in for the timing (tests never assert
    on time): latency taken as the MACs fraction gives the MACs target's counts."""
    from onnxprune.allocate import allocate
    from onnxprune.api import _analysis
    from onnxprune.cost import CostModel, counter
    from onnxprune.model import load_model

    a = _analysis(load_model(MODELS / "resnet_bottleneck.onnx"))
    groups = a.prunable
    scores = score_groups(a, "l2")
    cost = CostModel(a)

    def count_of_factory(counts):
        return counter(a, {r: counts[g.id] for g in groups if g.id in counts for r in g.roots})

    dense = cost.macs(count_of_factory({}))
    fake_latency = lambda counts: cost.macs(count_of_factory(counts)) / dense  # noqa: E731
    by_macs, how_macs = allocate(groups, scores, AllocationOptions(global_ranking=True, target_macs=0.6, round_to=4),
                                 cost, count_of_factory)
    by_latency, how = allocate(groups, scores, AllocationOptions(global_ranking=True, target_latency=0.6, round_to=4),
                               cost, count_of_factory, fake_latency)
    assert how["strategy"] == "global+target-latency" and how["target_latency"] == 0.6
    assert fake_latency(by_latency) <= 0.6
    # the same threshold ratio, to 8 bisection steps instead of 40 (no give-back: it would time a model per try)
    assert abs(how["ratio"] - how_macs["ratio"]) <= 0.9 / 2 ** 8
    assert fake_latency(by_latency) <= fake_latency(by_macs) <= 0.6


def test_prune_to_a_latency_target_builds_and_times_candidates(monkeypatch):
    """End to end with the timer replaced (no timing in tests): every candidate is a real
    pruned model in a real session, compared with the dense one."""
    import sys

    calls = []

    def fake(sa, sb, feeds, runs):
        calls.append((set(feeds) == {i.name for i in sa.get_inputs()}, runs))
        return {"ratio": 0.5}

    monkeypatch.setattr(sys.modules["onnxprune.validate"], "interleaved_latency", fake)
    r = onnxprune.prune(str(MODELS / "resnet_basic_bn.onnx"), target_latency=0.8, latency_runs=3)
    assert r.plan.settings["strategy"] == "global+target-latency" and r.plan.settings["target_latency"] == 0.8
    assert calls == [(True, 3)] * (1 + 8 + 1)  # the cap, 8 bisection steps, then the written model again
    final = r.report["latency_target"]  # timed separately, in fresh sessions, after repair
    assert final["target"] == 0.8 and final["final_ratio"] == 0.5 and final["met"]
    assert final["allocation_ratio"] == 0.5 and final["runs"] == 3


def test_round_to_counts_positions_of_multi_position_channels():
    """Attention heads of head_dim positions: round_to applies to the kept positions."""
    from types import SimpleNamespace

    from onnxprune.allocate import group_round_to

    heads = SimpleNamespace(id=0, size=12, grain=32, roots=[0])
    assert group_round_to(heads, 16) == 1
    assert group_round_to(SimpleNamespace(grain=8), 16) == 2
    assert group_round_to(SimpleNamespace(grain=1), 16) == 16
    assert group_round_to(object(), 8) == 8  # no grain: plain channels
    counts = uniform_counts([heads], 0.25, AllocationOptions(round_to=16))
    assert counts == {0: 9}
