"""The Python API: inspect(), prune(), apply(). The CLI is a thin layer over these."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import onnx

from . import __version__
from .allocate import AllocationOptions, allocate, select_channels
from .analysis import HEAD_MODES, Analysis, AnalysisOptions, analyze
from .cost import CostModel, count_macs, count_params, counter
from .data import load_data
from .errors import BadArgumentError, NothingPrunableError, UnsupportedModelError, ValidationFailed
from .importance import NEEDS, check_criterion, score_groups
from .model import ModelSource, load_model, save_model, write_text_atomic
from .plan import Plan, model_fingerprint
from .report import build_report, inspect_report, model_facts
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
          seed: int = 0, finetune=None, folds: int = 1, ray: str | None = None,
          head_mode: str = "heads") -> PruneResult:
    """Prune ``model`` and return the new model, its plan and a report.

    ``ratio`` removes that fraction of every prunable group (or of all channels with
    ``global_ranking``); ``target_macs`` keeps at most that fraction of the MACs instead,
    searching the threshold of the global ranking (or the uniform ratio with
    ``global_ranking=False``).

    With ``validation`` data (see :func:`onnxprune.data.load_data`) the result is compared
    with the original (``report["validation"]``); a ``max_drop`` of ``metric`` that is
    exceeded raises :class:`ValidationFailed` unless ``force``.

    ``calibration`` data (same forms) feeds the data-aware criteria (``activation``,
    ``apoz``, ``entropy``, ``variance``, ``wanda``, ``taylor``, ``fisher``): it is run
    through ONNX Runtime in batches of ``batch_size`` on ``device`` and reduced to
    per-channel statistics. Groups a criterion cannot score (no gradient through an op)
    stay whole, or are scored by ``fallback_criterion`` when given. Without separate
    ``validation`` data the result is validated on the calibration data.

    ``target_params`` keeps at most that fraction of the floating-point weights the same
    way, ``target_latency`` at most that fraction of the dense model's ONNX Runtime latency
    on this machine and ``device`` (each candidate timed against the dense model,
    interleaved, ``latency_runs`` runs each, on synthetic inputs of the declared shapes). ``exclude`` is a regular expression: groups with a member node whose name it
    matches (``re.search``) stay whole.

    ``allocation`` names the strategy: ``uniform``, ``global`` (same as ``global_ranking``),
    ``search`` (:func:`onnxprune.search.search_allocation`: ``search_candidates`` pruned
    models evaluated on the calibration data by a ``seed``-ed evolution strategy over
    per-group ratios, the best under the MACs target kept) or ``sensitivity``: every group is pruned alone at ``sensitivity_ratios`` and measured
    on the calibration data (:func:`onnxprune.sensitivity.sensitivity`, ``jobs`` worker
    processes), then the MACs target is met greedily where the metric drops least per MAC
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
    if not given:
        raise BadArgumentError("give a pruning ratio or a target (e.g. --ratio 0.3 or --target-macs 0.5)")
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
    if (folds != 1 or ray is not None) and allocation != "sensitivity":
        raise BadArgumentError("--folds and --ray apply to the sensitivity sweep of --allocation sensitivity")
    if allocation in ("sensitivity", "search") and (target_macs is None or calibration is None):
        raise BadArgumentError(f"--allocation {allocation} needs a MACs target (--target-macs) and calibration data "
                               "(--calib) to measure the groups on")
    if allocation == "sensitivity":
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
    curves = search_history = None
    if allocation == "sensitivity":
        counts, how, curves = _sensitivity_counts(reference, calibration, analysis, target_macs, criterion, metric, labels,
                                          batch_size, max_samples, input_shapes, jobs, device, progress, reduction,
                                          normalize, loss, fallback_criterion, prune_norm_spaces, image_options,
                                          round_to, min_keep, max_ratio, sensitivity_ratios, folds, ray,
                                          head_mode)
        counts = {g.id: counts.get(g.id, g.size) for g in groups}
    elif allocation == "search":
        from .search import search_allocation

        evaluate = _candidate_drop(analysis, groups, scores, reference, calib_data, metric, device)
        counts, how = search_allocation(groups, cost, count_of_factory, target_macs, evaluate,
                                        candidates=search_candidates, seed=seed, round_to=round_to,
                                        min_keep=min_keep, max_ratio=max_ratio)
        search_history = how.pop("history")
    else:
        latency = None if target_latency is None else _latency_ratio(analysis, groups, scores, input_shapes, device,
                                                                     latency_runs)
        counts, how = allocate(groups, scores, opts, cost, count_of_factory, latency)
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
    if reference is not None:
        check = run_validation(reference, result.model, None, metric=metric, max_drop=max_drop,
                               input_shapes=input_shapes, dataset=dataset, device=device, progress=progress)
        result.report["validation"] = check
        if not check["passed"] and not force:
            raise ValidationFailed(f"pruned model fails validation: {check['failures'][0]} "
                                   "(nothing written; --force writes it anyway)")
    return result


def _candidate_drop(analysis, groups, scores, reference, dataset, metric, device):
    """counts -> the metric drop of the model they make against the dense one, on the
    calibration data (the search's objective)."""
    from .runtime import session
    from .sensitivity import evaluate_plan, run_batches

    device = "cpu" if device == "auto" else device
    batches = list(dataset.batches)
    dense = run_batches(session(reference, device), batches)
    by_id = {g.id: g for g in groups}

    def drop(counts: dict):
        keep = {gid: select_channels(by_id[gid], scores[gid], k) for gid, k in counts.items() if k < by_id[gid].size}
        return evaluate_plan(analysis, keep, batches, dense, dataset.labels, metric, device)[1]

    return drop


def _latency_ratio(analysis, groups, scores, input_shapes, device, runs):
    """counts -> measured latency of the model they make, relative to the dense model's
    (both sessions timed alternately, so machine noise hits both alike)."""
    from .runtime import random_inputs, session
    from .validate import interleaved_latency

    dense_model = apply_plan(analysis, Plan("", {}, {}), consume=False)
    feeds = random_inputs(dense_model, input_shapes)
    dense = session(dense_model, device)
    by_id = {g.id: g for g in groups}

    def ratio(counts: dict) -> float:
        plan = Plan("", {gid: {"size": by_id[gid].size, "keep": select_channels(by_id[gid], scores[gid], k)}
                         for gid, k in counts.items() if k < by_id[gid].size}, {})
        candidate = session(apply_plan(analysis, plan, consume=False), device)
        return interleaved_latency(dense, candidate, feeds, runs)["ratio"]

    return ratio


def _exclude_pattern(pattern: str | None):
    if pattern is None:
        return None
    import re

    try:
        return re.compile(pattern)
    except re.error as exc:
        raise BadArgumentError(f"--exclude '{pattern}' is not a regular expression ({exc})") from None


def _sensitivity_counts(reference, calibration, analysis, target_macs, criterion, metric, labels, batch_size,
                        max_samples, input_shapes, jobs, device, progress, reduction, normalize, loss,
                        fallback_criterion, prune_norm_spaces, image_options, round_to, min_keep, max_ratio,
                        ratios, folds=1, ray=None, head_mode="heads") -> tuple[dict, dict, dict]:
    from .sensitivity import DEFAULT_RATIOS, sensitivity
    from .sensitivity_alloc import allocate_from_sensitivity

    sens = sensitivity(reference, calibration, criterion=criterion, ratios=ratios or DEFAULT_RATIOS, metric=metric,
                       labels=labels, batch_size=batch_size, max_samples=max_samples, input_shapes=input_shapes,
                       jobs=jobs, device="cpu" if device == "auto" else device, progress=progress,
                       reduction=reduction, normalize=normalize, loss=loss, fallback_criterion=fallback_criterion,
                       prune_norm_spaces=prune_norm_spaces, image_options=image_options, folds=folds, ray=ray,
                       head_mode=head_mode)
    details: dict = {}
    counts = allocate_from_sensitivity(sens, target_macs, analysis=analysis, input_shapes=input_shapes,
                                       round_to=round_to, min_keep=min_keep, max_ratio=max_ratio, details=details)
    how = {"strategy": "sensitivity+target-macs", "target_macs": target_macs,
           "sensitivity_ratios": [p["ratio"] for p in sens["groups"][0]["points"]] if sens["groups"] else [],
           "predicted_drop": details.get("predicted_drop")}
    if folds > 1:
        how["sensitivity_folds"] = folds
    return counts, how, sensitivity_curves(sens, metric)


def sensitivity_curves(sens: dict, metric: str) -> dict:
    """The sweep as report["sensitivity"]: one series of (ratio, metric) per group, for the
    HTML page's line chart."""
    points = []
    for g in sens["groups"]:
        label = f"{g['id']}: {g['name']}"
        points.append({"x": 0.0, "y": sens["dense"]["value"], "label": label})
        points += [{"x": p["ratio"], "y": p["value"], "label": label} for p in g["points"] if p["ratio"] > 0]
    return {"title": "Sensitivity: each group pruned alone", "x_label": "fraction of the group's channels removed",
            "y_label": f"{metric} vs the dense model", "points": points}


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
