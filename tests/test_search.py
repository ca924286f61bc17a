"""--allocation search: seeded, meets the budget, never worse than the uniform start on
the calibration data."""

import json
from importlib import resources

import jsonschema
import numpy as np
import pytest

import onnxprune
from onnxprune.errors import BadArgumentError
from onnxprune.report import REPORT_SCHEMA
from onnxprune.search import search_allocation

from .conftest import MODELS


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet_basic_bn"])
def test_search_is_seeded_meets_the_budget_and_beats_uniform(name):
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    kw = dict(target_macs=0.6, allocation="search", calibration={"input": x}, recover=False, round_to=1,
              search_candidates=9, metric="cosine")
    a = onnxprune.prune(str(MODELS / f"{name}.onnx"), **kw)
    b = onnxprune.prune(str(MODELS / f"{name}.onnx"), **kw)
    assert a.plan.groups == b.plan.groups  # same seed, same result
    assert a.report["macs_ratio"] <= 0.6
    s = a.plan.settings
    assert s["strategy"] == "search+target-macs" and s["candidates"] == 9 and s["seed"] == 0
    assert s["best_drop"] <= s["uniform_drop"]
    assert len(a.report["search"]) <= 9 and sum(h["accepted"] for h in a.report["search"]) >= 1
    assert all(h["macs_fraction"] <= 0.6 for h in a.report["search"])
    schema = json.loads(resources.files("onnxprune").joinpath(REPORT_SCHEMA).read_text())
    jsonschema.validate(json.loads(json.dumps(a.report, allow_nan=False)), schema)


def test_search_needs_a_target_and_data():
    with pytest.raises(BadArgumentError, match="--allocation search needs"):
        onnxprune.prune(str(MODELS / "mobilenetv2.onnx"), ratio=0.3, allocation="search")


def _search(name, **kw):
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    return onnxprune.prune(str(MODELS / f"{name}.onnx"), target_macs=0.6, allocation="search",
                           calibration={"input": x}, round_to=1, search_candidates=9, metric="cosine", **kw)


@pytest.mark.parametrize("recover", [False, True])
def test_search_in_worker_processes_equals_serial(recover):
    serial = _search("mobilenetv2", recover=recover)
    parallel = _search("mobilenetv2", recover=recover, jobs=2)
    assert serial.plan.groups == parallel.plan.groups
    assert serial.report["search"] == parallel.report["search"]
    assert parallel.plan.settings["search_workers"] == "2 processes"
    assert serial.plan.settings["search_repaired"] is recover


def test_search_candidates_are_repaired_like_the_result_unless_told_not():
    repaired = _search("resnet_basic_bn")  # recover is on with calibration data
    plain = _search("resnet_basic_bn", search_repair=False)
    assert repaired.plan.settings["search_repaired"] and not plain.plan.settings["search_repaired"]
    assert "recovery" in repaired.report and "recovery" in plain.report  # the result is repaired either way
    # measured after repair, the candidates lose far less than unrepaired ones
    assert repaired.plan.settings["uniform_drop"] < plain.plan.settings["uniform_drop"]


def test_search_reads_the_model_once_and_analyzes_it_once(monkeypatch):
    from onnxprune import api, model

    reads, analyses = [], []
    parse, analysis = model._parse, api._analysis
    monkeypatch.setattr(model, "_parse", lambda data, name: reads.append(name) or parse(data, name))
    monkeypatch.setattr(api, "_analysis", lambda *a, **k: analyses.append(1) or analysis(*a, **k))
    r = _search("resnet_basic_bn", recover=False)
    assert len(r.report["search"]) == 9
    assert reads == [str(MODELS / "resnet_basic_bn.onnx")] and len(analyses) == 1


def test_search_generation_keeps_the_best_and_is_never_worse_than_uniform():
    groups, cost, factory = _three_groups()
    batches = []

    def evaluate(many):
        batches.append(len(many))
        return [float(c[0]) - 0.1 * c[2] for c in many]  # prefers cutting group 0, keeping group 2

    counts, how = search_allocation(groups, cost, factory, 0.5, evaluate, candidates=9, seed=3)
    assert batches == [1, 4, 4]  # the uniform start, then two generations measured as batches
    assert how["best_drop"] <= how["uniform_drop"] and sum(counts.values()) <= 12
    assert sum(h["accepted"] for h in how["history"]) >= 1


def test_search_starts_from_the_given_allocations_and_breaks_metric_ties_by_output_error():
    groups, cost, factory = _three_groups()
    batches = []

    def evaluate(many):
        batches.append([dict(c) for c in many])
        return [(0.5, float(c[2])) for c in many]  # the metric ties everywhere; the error prefers cutting group 2

    start = {0: 8, 1: 8, 2: 1}
    counts, how = search_allocation(groups, cost, factory, 0.75, evaluate, candidates=2, seed=0, starts=[start])
    assert len(batches) == 1 and len(batches[0]) == 2  # the uniform and the given start, measured together
    assert counts[2] < counts[0] and how["history"][1]["accepted"] and not how["history"][0]["accepted"]


def _three_groups():
    """Three groups of 8 channels whose MACs are the kept counts summed (a toy cost model)."""
    from types import SimpleNamespace

    class Cost:
        macs_known = True

        def macs(self, count_of):
            return float(sum(count_of(i) for i in range(3)))

    def factory(counts):
        return lambda root: counts.get(root, 8)

    return [SimpleNamespace(id=i, size=8, grain=1, roots=[i]) for i in range(3)], Cost(), factory


def test_given_starts_that_meet_the_budget_are_measured_exactly():
    from types import SimpleNamespace

    class Cost:
        macs_known = True

        def macs(self, count_of):
            return float(sum(count_of(i) for i in range(3)))

    groups = [SimpleNamespace(id=i, size=200, grain=1, roots=[i]) for i in range(3)]
    seen = []

    def evaluate(many):
        seen.extend(dict(c) for c in many)
        return [float(sum(c.values())) for c in many]

    # only group 2 cut: as pressures (floored at 0.02) the others would lose a few channels too
    start = {0: 200, 1: 200, 2: 100}
    search_allocation(groups, Cost(), lambda counts: lambda root: counts.get(root, 200), 500 / 600, evaluate,
                      candidates=2, seed=0, starts=[start])
    assert seen[1] == start


def test_search_starts_include_one_per_group_kind_that_meets_the_target_alone():
    from dataclasses import replace

    from onnxprune.allocate import AllocationOptions
    from onnxprune.api import _analysis
    from onnxprune.cost import CostModel, counter
    from onnxprune.importance import score_groups
    from onnxprune.model import load_model
    from onnxprune.strategy import Strategy

    a = _analysis(load_model(str(MODELS / "mobilenetv2.onnx")), in_place=True)
    groups = a.prunable
    assert len({g.kind for g in groups}) >= 2

    def factory(counts):
        return counter(a, {r: counts[g.id] for g in groups if g.id in counts for r in g.roots})

    opts = AllocationOptions(None, False, 0.7, 1, 1, 0.9)
    strategy = Strategy("search", a, groups, score_groups(a, "l2"), opts, CostModel(a), factory, {})
    starts = strategy._kind_starts(replace(opts, global_ranking=False))
    assert starts
    for start in starts:
        cut = {g.kind for g in groups if start[g.id] < g.size}
        assert len(cut) == 1  # one kind alone
        assert strategy.fraction(start) <= 0.7
