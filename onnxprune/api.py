"""The Python API: inspect(), prune(), apply(). The CLI is a thin layer over these."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import onnx

from . import __version__
from .allocate import AllocationOptions, select_channels
from .analysis import HEAD_MODES, Analysis, AnalysisOptions, analyze
from .cost import CostModel, count_macs, count_params, counter
from .data import load_data
from .errors import BadArgumentError, NothingPrunableError, UnsupportedModelError, ValidationFailed
from .importance import NEEDS, check_criterion, score_groups
from .model import ModelSource, load_model, save_model, write_text_atomic
from .plan import Plan, model_fingerprint
from .report import build_report, inspect_report, model_facts
from .strategy import Strategy
from .surgery import apply_plan
from .validate import validate as run_validation
from .verify import io_signature, verify_model


def _analysis(model: onnx.ModelProto, input_shapes=None, prune_norm_spaces=False, in_place=False,
              head_mode: str = "heads") -> Analysis:
    if head_mode not in HEAD_MODES:
        raise BadArgumentError(f"head_mode must be one of {', '.join(HEAD_MODES)}, got '{head_mode}'")
    return analyze(model, AnalysisOptions(prune_norm_spaces=prune_norm_spaces, input_shapes=input_shapes,
                                          head_mode=head_mode), in_place)


def _before(proto: onnx.ModelProto, input_shapes) -> dict:
    """Facts about the loaded model taken before the analysis edits it in place."""
    return {"facts": model_facts(proto, input_shapes), "io": io_signature(proto),
            "fingerprint": model_fingerprint(proto)}


def inspect(model: ModelSource, *, input_shapes: dict | None = None, prune_norm_spaces: bool = False,
            head_mode: str = "heads") -> dict:
    """Prunable groups, their sizes and MACs share, and what blocked the rest (``head_mode``:
    see :func:`prune`)."""
    proto = load_model(model)
    analysis = _analysis(proto, input_shapes, prune_norm_spaces, head_mode=head_mode)
    return inspect_report(proto, analysis, CostModel(analysis))


@dataclass
class PruneResult:
    model: onnx.ModelProto
    plan: Plan
    report: dict = field(default_factory=dict)
    serialized: bytes | None = field(default=None, repr=False)  # self.model's bytes, when known

    def save(self, path, *, external_data: bool | None = None) -> None:
        save_model(self.model, path, external_data=external_data, serialized=self.serialized)

    def save_plan(self, path) -> None:
        write_text_atomic(path, self.plan.to_json())


def _check_ratio(name: str, value: float | None, upper_open: bool = True) -> None:
    if value is None:
        return
    if not (0.0 <= value < 1.0) if upper_open else not (0.0 < value <= 1.0):
        rng = "[0, 1)" if upper_open else "(0, 1]"
        raise BadArgumentError(f"{name} must be in {rng}, got {value:g}")


def prune(model: ModelSource, *, ratio: float | None = None, criterion: str = "l2", global_ranking: bool | None = None,
          target_macs: float | None = None, round_to: int = 16, min_keep: int = 1, max_ratio: float = 0.9,
          reduction: str = "sum", normalize: str = "mean", input_shapes: dict | None = None,
          prune_norm_spaces: bool = False, verify: bool = True, validation=None, labels: str | None = None,
          metric: str = "agreement", max_drop: float | None = None, force: bool = False,
          calibration=None, batch_size: int = 16, max_samples: int | None = None, loss: str = "auto",
          fallback_criterion: str | None = None, device: str = "auto", progress: bool | None = None,
          image_options=None, recover: bool | None = None, recover_options=None,
          allocation: str | None = None, sensitivity_ratios=None, jobs: int = 1,
          target_params: float | None = None, exclude: str | None = None,
          target_latency: float | None = None, latency_runs: int = 15, search_candidates: int = 24,
          seed: int = 0, finetune=None, folds: int = 1, ray: str | None = None, search_repair: bool | None = None,
          budget_probes: int = 6, head_mode: str = "heads") -> PruneResult:
    """Prune ``model`` and return the new model, its plan and a report.

    ``ratio`` removes that fraction of every prunable group (or of all channels with
    ``global_ranking``); ``target_macs`` keeps at most that fraction of the MACs instead,
    searching the threshold of the global ranking (or the uniform ratio with
    ``global_ranking=False``).

    With ``validation`` data (see :func:`onnxprune.data.load_data`) the result is compared
    with the original (``report["validation"]``); a ``max_drop`` of ``metric`` that is
    exceeded raises :class:`ValidationFailed` unless ``force``.

    ``max_drop`` without a ratio or a target is a *budget* instead
    (:func:`onnxprune.budget.smallest_within`): ``budget_probes`` bisection steps over the
    MACs target, each probe allocated by the ``allocation`` strategy, pruned, repaired
    when ``recover`` is on and measured on the validation data (the calibration data
    without it); the smallest probed target within ``max_drop`` is kept and
    ``report["budget"]`` lists the probes.

    ``calibration`` data (same forms) feeds the data-aware criteria (``activation``,
    ``apoz``, ``entropy``, ``variance``, ``wanda``, ``taylor``, ``fisher``): it is run
    through ONNX Runtime in batches of ``batch_size`` on ``device`` and reduced to
    per-channel statistics. Groups a criterion cannot score (no gradient through an op)
    stay whole, or are scored by ``fallback_criterion`` when given. Without separate
    ``validation`` data the result is validated on the calibration data.

    ``target_params`` keeps at most that fraction of the floating-point weights the same
    way, ``target_latency`` at most that fraction of the dense model's ONNX Runtime latency
    on this machine and ``device`` (each candidate timed against the dense model,
    interleaved, ``latency_runs`` runs each, on synthetic inputs of the declared shapes);
    the written model is then timed again the same way, in fresh sessions
    (``report["latency_target"]``: the final ratio beside the allocation's). ``exclude`` is
    a regular expression: groups with a member node whose name it matches (``re.search``)
    stay whole.

    ``allocation`` names the strategy: ``uniform``, ``global`` (same as ``global_ranking``),
    ``search`` (:func:`onnxprune.search.search_allocation`: ``search_candidates`` pruned
    models evaluated on the validation data (the calibration data without it) by a
    ``seed``-ed evolution strategy over per-group ratios, started from the uniform and the
    global allocations and one cut of each group kind alone (see
    :meth:`onnxprune.strategy.Strategy._kind_starts`), the best under the MACs target kept; each candidate repaired like the
    result when ``search_repair``, which defaults to ``recover``; a generation's candidates
    run in ``jobs`` worker processes or on the ``ray`` cluster) or ``sensitivity``: every
    group is pruned alone at ``sensitivity_ratios`` and measured on the calibration data
    (:func:`onnxprune.sensitivity.sensitivity`, ``jobs`` worker processes), then the MACs target is met greedily where the metric drops least per MAC
    saved (:func:`~onnxprune.sensitivity_alloc.allocate_from_sensitivity`). With it,
    ``ray`` (``auto`` or an address) runs the sweep's candidates on a Ray cluster and
    ``folds`` K >= 2 cross-validates the sweep: channels chosen from statistics of K-1
    folds of the calibration data, the metric measured on the held-out fold (see
    :func:`onnxprune.sensitivity.sensitivity`); the pruned model itself is scored and
    repaired on all the calibration data.

    ``recover`` (default: on whenever ``calibration`` is given) repairs the remaining
    weights from the calibration data (:func:`onnxprune.recover.run.recover`: least-squares
    reconstruction of every consumer of a cut space, bias compensation, BatchNorm
    statistics correction; ``recover_options`` is a
    :class:`~onnxprune.recover.run.RecoverOptions`); ``report["recovery"]`` says what ran.

    ``finetune`` (a :class:`~onnxprune.finetune.FinetuneOptions`, or True for the defaults)
    then distils the pruned model toward the dense one on the calibration data
    (:func:`onnxprune.finetune.finetune`); ``report["finetune"]`` holds its history.
    """
    _check_ratio("ratio", ratio)
    _check_ratio("target_macs", target_macs, upper_open=False)
    _check_ratio("target_params", target_params, upper_open=False)
    _check_ratio("target_latency", target_latency, upper_open=False)
    _check_ratio("max_ratio", max_ratio)
    given = [n for n, v in (("a ratio", ratio), ("a MACs target", target_macs), ("a parameters target", target_params),
                            ("a latency target", target_latency)) if v is not None]
    budget = max_drop is not None and not given  # the smallest model within max_drop
    if not given and not budget:
        raise BadArgumentError("give a pruning ratio, a target or a budget (e.g. --ratio 0.3, --target-macs 0.5 or "
                               "--max-drop 0.02)")
    if len(given) > 1:
        raise BadArgumentError(f"give one of a ratio, a MACs target or a parameters target, not both {given[0]} "
                               f"and {given[1]} (a target searches the ratio)")
    excluded = _exclude_pattern(exclude)
    if round_to < 1 or min_keep < 1:
        raise BadArgumentError("round_to and min_keep must be at least 1")
    check_criterion(criterion)
    if allocation not in (None, "uniform", "global", "sensitivity", "search"):
        raise BadArgumentError(f"unknown allocation '{allocation}' (choose from uniform, global, sensitivity, search)")
    if allocation in ("uniform", "global"):
        global_ranking = allocation == "global"
    if folds != 1 and allocation != "sensitivity":
        raise BadArgumentError("--folds applies to the sensitivity sweep of --allocation sensitivity")
    if ray is not None and allocation not in ("sensitivity", "search"):
        raise BadArgumentError("--ray runs the candidates of --allocation sensitivity or search")
    if allocation in ("sensitivity", "search") and ((target_macs is None and not budget) or calibration is None):
        raise BadArgumentError(f"--allocation {allocation} needs a MACs target (--target-macs or a --max-drop budget) "
                               "and calibration data (--calib) to measure the groups on")
    if budget:
        if validation is None and calibration is None:
            raise BadArgumentError("--max-drop as a budget needs data to measure the drop on (--val or --calib)")
        if budget_probes < 1:
            raise BadArgumentError(f"budget_probes must be at least 1, got {budget_probes}")
        if not max_drop >= 0:
            raise BadArgumentError(f"--max-drop must be >= 0, got {max_drop}")
        global_ranking = allocation != "uniform" if global_ranking is None else global_ranking
    if allocation in ("sensitivity", "search"):
        from .parallel import backend
        from .sensitivity import check_folds

        check_folds(folds)
        backend(jobs, ray).check()  # an unreachable Ray cluster fails before any work
    if fallback_criterion is not None:
        check_criterion(fallback_criterion)
    if batch_size < 1:
        raise BadArgumentError("batch_size must be at least 1")
    if global_ranking is None:  # a budget is spent where channels matter least; a ratio applies everywhere
        global_ranking = any(t is not None for t in (target_macs, target_params, target_latency))
    t0 = time.perf_counter()
    proto = load_model(model)  # a private copy: the analysis may edit it in place
    before = _before(proto, input_shapes)
    reference = calib_data = dataset = None
    needs = tuple(dict.fromkeys(NEEDS[criterion] + (NEEDS[fallback_criterion] if fallback_criterion else ())))
    if recover_options is not None:
        from .recover.tokens import find_token_mask

        recover_options.check()
        find_token_mask(proto, recover_options.token_mask)  # a wrong name fails before any work
    if recover is None:
        recover = calibration is not None
    if recover and calibration is None:
        raise BadArgumentError("repairing the pruned weights needs calibration data (--calib), or --no-recover")
    if finetune is not None and finetune is not False:
        from .finetune import FinetuneOptions

        if calibration is None:
            raise BadArgumentError("--finetune trains on the calibration data: give --calib")
        finetune = FinetuneOptions() if finetune is True else finetune
        finetune.check()
    else:
        finetune = None
    if needs and calibration is None:
        raise BadArgumentError(f"criterion '{criterion if NEEDS[criterion] else fallback_criterion}' needs "
                               "calibration data (--calib)")
    if calibration is not None:  # read and checked before any work
        calib_data = load_data(calibration, proto, labels_key=labels, batch_size=batch_size,
                               max_samples=max_samples, input_shapes=input_shapes, image_options=image_options)
    if validation is not None or calib_data is not None:  # the original is kept to compare with (and repair toward)
        reference = load_model(proto, check=False)
        dataset = calib_data if validation is None else load_data(
            validation, reference, labels_key=labels, batch_size=batch_size, input_shapes=input_shapes,
            image_options=image_options)
    analysis = _analysis(proto, input_shapes, prune_norm_spaces, in_place=True, head_mode=head_mode)
    del proto
    groups = analysis.prunable
    if not groups:
        raise _nothing_prunable(analysis)
    if excluded is not None:
        groups = [g for g in groups if not any(excluded.search(m.node) for m in g.members)]
        if not groups:
            raise NothingPrunableError(f"nothing to prune: --exclude '{exclude}' matches every prunable group")
    if needs:
        from .calibration.collect import collect

        analysis.calibration = collect(analysis, groups, calib_data, needs, loss=loss, device=device,
                                       progress=progress)
    skipped: dict = {}
    scores = score_groups(analysis, criterion, reduction, normalize, groups=groups, skipped=skipped)
    if skipped and fallback_criterion:
        scores.update(score_groups(analysis, fallback_criterion, reduction, normalize,
                                   groups=[g for g in groups if g.id in skipped], skipped={}))
    groups = [g for g in groups if g.id in scores]
    if not groups:
        raise NothingPrunableError(f"nothing to prune: criterion '{criterion}' scores no group "
                                   f"({next(iter(skipped.values()))})")
    if skipped:
        unscored = [gid for gid in skipped if gid not in scores]
        if unscored:
            warnings.warn(f"{len(unscored)} group(s) kept whole: criterion '{criterion}' cannot score them "
                          f"({skipped[unscored[0]]}; --fallback-criterion scores them another way)",
                          RuntimeWarning, stacklevel=2)
    cost = CostModel(analysis)

    def count_of_factory(counts):  # kept counts per group id -> count_of(space)
        return counter(analysis, {r: counts[g.id] for g in groups if g.id in counts for r in g.roots})

    opts = AllocationOptions(ratio, global_ranking, target_macs, round_to, min_keep, max_ratio, target_params,
                             target_latency)
    ctx = {"reference": reference, "calibration": calibration, "calib_data": calib_data, "metric": metric,
           "val_data": dataset if validation is not None else None,
           "device": device, "jobs": jobs, "ray": ray, "input_shapes": input_shapes,
           "prune_norm_spaces": prune_norm_spaces, "recover_options": recover_options,
           "search_repair": recover if search_repair is None else search_repair,
           "search_candidates": search_candidates, "seed": seed, "criterion": criterion, "labels": labels,
           "batch_size": batch_size, "max_samples": max_samples, "progress": progress, "reduction": reduction,
           "normalize": normalize, "loss": loss, "fallback_criterion": fallback_criterion,
           "image_options": image_options, "folds": folds, "sensitivity_ratios": sensitivity_ratios,
           "head_mode": head_mode}
    strategy = Strategy(allocation or ("global" if global_ranking else "uniform"), analysis, groups, scores, opts,
                        cost, count_of_factory, ctx)
    latency = budget_report = None
    try:
        if budget:
            if not cost.macs_known:
                raise BadArgumentError("--max-drop as a budget bisects the MACs: pass --input-shape for dynamic dims")
            from .budget import smallest_within

            probes = strategy.pool(dataset, recover)
            counts, how, budget_report = smallest_within(max_drop, strategy.counts_at, probes.drop, strategy.fraction,
                                                         probes=budget_probes, metric=metric)
            budget_report.update(data="validation" if validation is not None else "calibration", repaired=recover)
            how = {**how, "strategy": how["strategy"].replace("target-macs", "max-drop"),
                   "target_macs": budget_report["target_macs"], "max_drop": max_drop, "budget_probes": budget_probes}
        else:
            if target_latency is not None:
                latency = _latency_ratio(analysis, groups, scores, input_shapes, device, latency_runs)
            counts, how = strategy.counts(latency)
    finally:
        strategy.close()
    curves, search_history = strategy.curves, strategy.search_history
    settings = {"exclude": exclude, "criterion": criterion, "fallback_criterion": fallback_criterion, "recover": recover, "reduction": reduction, "normalize": normalize, "round_to": round_to,
                "min_keep": min_keep, "max_ratio": max_ratio, "prune_norm_spaces": prune_norm_spaces,
                "head_mode": head_mode, **how}
    plan = Plan(before["fingerprint"], {}, settings)
    for g in groups:
        k = counts[g.id]
        if k < g.size:
            plan.groups[g.id] = {"size": g.size, "keep": select_channels(g, scores[g.id], k)}
    steps = []
    recovery: dict = {}
    if recover:
        from .recover.run import recover as run_recover
        from .recover.targets import repair_targets

        targets = repair_targets(analysis, plan)  # before surgery consumes the analysis

        def repair(pruned):
            model, recovery["report"] = run_recover(reference, pruned, targets, calib_data, recover_options,
                                                    device=device, progress=progress)
            return model

        steps.append(repair)
    if finetune is not None:
        from .finetune import finetune as run_finetune
        from .finetune.features import kept_tensors

        kept = kept_tensors(analysis, plan) if finetune.distill != "logits" or finetune.blockwise else None
        if finetune.device == "auto":
            finetune.device = device

        def train(pruned):
            done = run_finetune(reference, pruned, None, finetune, kept=kept, progress=progress, dataset=calib_data)
            recovery["finetune"] = done.report
            return done.model

        steps.append(train)

    def repair_chain(pruned):
        for step in steps:
            pruned = step(pruned)
        return pruned

    repair = repair_chain if steps else None
    result = _finish(before, analysis, plan, input_shapes, verify, t0, repair)
    if recover:
        result.report["recovery"] = recovery["report"]
    if finetune is not None:
        result.report["finetune"] = recovery["finetune"]
    if analysis.calibration is not None:
        result.report["calibration"] = analysis.calibration.to_dict()
    if curves is not None:
        result.report["sensitivity"] = curves
    if search_history is not None:
        result.report["search"] = search_history
    if budget_report is not None:
        result.report["budget"] = budget_report
    if latency is not None:
        result.report["latency_target"] = latency.final(result.model, target_latency, counts)
    if reference is not None:
        check = run_validation(reference, result.model, None, metric=metric, max_drop=max_drop,
                               input_shapes=input_shapes, dataset=dataset, device=device, progress=progress)
        result.report["validation"] = check
        if not check["passed"] and not force:
            raise ValidationFailed(f"pruned model fails validation: {check['failures'][0]} "
                                   "(nothing written; --force writes it anyway)")
    return result


def _latency_ratio(analysis, groups, scores, input_shapes, device, runs):
    return _Latency(analysis, groups, scores, input_shapes, device, runs)


class _Latency:
    """counts -> measured latency of the model they make, relative to the dense model's
    (both sessions timed alternately, so machine noise hits both alike); :meth:`final`
    times the finished model again, separately, for the report."""

    def __init__(self, analysis, groups, scores, input_shapes, device, runs):
        from .runtime import random_inputs

        self.analysis, self.scores, self.device, self.runs = analysis, scores, device, runs
        self.dense_model = apply_plan(analysis, Plan("", {}, {}), consume=False)
        self.feeds = random_inputs(self.dense_model, input_shapes)
        self.by_id = {g.id: g for g in groups}
        self.measured: dict = {}
        self._dense = None

    def _session(self, model):
        from .runtime import session

        return session(model, self.device)

    def __call__(self, counts: dict) -> float:
        from .validate import interleaved_latency

        if self._dense is None:
            self._dense = self._session(self.dense_model)
        by_id = self.by_id
        plan = Plan("", {gid: {"size": by_id[gid].size, "keep": select_channels(by_id[gid], self.scores[gid], k)}
                         for gid, k in counts.items() if k < by_id[gid].size}, {})
        candidate = self._session(apply_plan(self.analysis, plan, consume=False))
        ratio = interleaved_latency(self._dense, candidate, self.feeds, self.runs)["ratio"]
        self.measured[tuple(sorted(counts.items()))] = ratio
        return ratio

    def final(self, model, target: float, counts: dict) -> dict:
        """The finished model (repaired, as written) timed against the dense one in fresh
        sessions: the latency ratio the user gets, next to what the allocation measured."""
        from .validate import interleaved_latency

        timing = interleaved_latency(self._session(self.dense_model), self._session(model), self.feeds, self.runs)
        ratio = timing["ratio"]
        return {"target": target, "allocation_ratio": self.measured.get(tuple(sorted(counts.items()))),
                "final_ratio": ratio, "met": ratio is not None and ratio <= target, "runs": self.runs,
                "p50_dense_ms": timing.get("p50_before_ms"), "p50_pruned_ms": timing.get("p50_after_ms")}


def _exclude_pattern(pattern: str | None):
    if pattern is None:
        return None
    import re

    try:
        return re.compile(pattern)
    except re.error as exc:
        raise BadArgumentError(f"--exclude '{pattern}' is not a regular expression ({exc})") from None


def apply(model: ModelSource, plan: Plan | str | dict, *, input_shapes: dict | None = None,
          verify: bool = True) -> PruneResult:
    """Re-apply a saved plan to the model it was made for."""
    t0 = time.perf_counter()
    if isinstance(plan, str):
        plan = Plan.from_json(plan)
    elif isinstance(plan, dict):
        plan = Plan.from_dict(plan)
    proto = load_model(model)
    before = _before(proto, input_shapes)
    analysis = _analysis(proto, input_shapes, bool(plan.settings.get("prune_norm_spaces", False)), in_place=True,
                         head_mode=plan.settings.get("head_mode", "heads"))
    plan.validate_against(analysis, before["fingerprint"])
    return _finish(before, analysis, plan, input_shapes, verify, t0)


def _finish(before, analysis, plan, input_shapes, verify, t0, repair=None) -> PruneResult:
    """Surgery, the repair of the remaining weights (when given), metadata, verification
    and the report."""
    pruned = apply_plan(analysis, plan, consume=True)
    if repair is not None:
        pruned = repair(pruned)
    meta = pruned.metadata_props.add()
    meta.key = "onnxprune"
    meta.value = f"version={__version__}; groups_pruned={len(plan.groups)}; {plan.settings.get('strategy', 'plan')}"
    data = verify_model(before["io"], pruned, input_shapes) if verify else None
    report = build_report(before["facts"], pruned, analysis, plan, input_shapes, time.perf_counter() - t0, data)
    return PruneResult(pruned, plan, report, data)


QUANTIZATION_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                    "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul"}


def _nothing_prunable(analysis) -> Exception:
    ops = {n.op_type for n in analysis.model.graph.node}
    quantized = sorted(ops & QUANTIZATION_OPS)
    if quantized:
        return UnsupportedModelError(f"quantized models ({', '.join(quantized[:3])}) cannot be pruned: prune the "
                                     "float model, then quantize it")
    return NothingPrunableError(_nothing_prunable_message(analysis))


def _nothing_prunable_message(analysis) -> str:
    reasons = {}
    for g in analysis.groups:
        for r in g.blocked[:1]:
            reasons[r] = reasons.get(r, 0) + 1
    if not reasons:
        return "nothing to prune: the model has no channel groups (no Conv/Gemm/MatMul with constant weights)"
    top = max(reasons, key=reasons.get)
    return f"nothing to prune: all {len(analysis.groups)} channel groups are blocked (most often: {top})"


__all__ = ["inspect", "prune", "apply", "PruneResult", "count_macs", "count_params"]
