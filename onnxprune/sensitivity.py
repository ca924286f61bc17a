"""Sensitivity sweep: how much the chosen metric suffers when each group alone loses a
ladder of ratios of its channels, measured against the dense model on calibration data.

The model is analyzed and scored once, the dense outputs are computed once; each
candidate is then surgery on a copy (``apply_plan(consume=False)``), an ONNX Runtime
session and one pass over the data. Candidates are independent: they run through
:mod:`onnxprune.parallel` — in this process, in ``jobs`` worker processes, or as tasks on
a Ray cluster (``ray``) — whose workers each receive the serialized dense model, the data
and the dense outputs once and re-run the deterministic analysis; a task is just which
channels each group keeps. Results equal the serial run's.

With ``folds`` K >= 2 the sweep is cross-validated (see :func:`sensitivity`): channels are
chosen from statistics of K-1 folds of the calibration data and the metric is measured on
the held-out fold, averaged over the K folds.

:func:`allocate_from_sensitivity` (in :mod:`onnxprune.sensitivity_alloc`) turns the curves
into per-group kept counts under a MACs target.
"""

from __future__ import annotations

import math
import time

import numpy as np
import onnx

from .allocate import allowed_count, select_channels
from .cost import CostModel, counter
from .data import Dataset, load_data, model_inputs
from .errors import BadArgumentError, NothingPrunableError
from .parallel import Serial, backend
from .importance import NEEDS, check_criterion, score_groups
from .model import ModelSource, load_model
from .plan import Plan, model_fingerprint
from .progress import Progress
from .report import group_macs_share
from .runtime import session
from .validate import LABEL_METRICS, METRICS, _classifier, _compare, metric_drop

FORMAT = "onnxprune.sensitivity"
VERSION = 1
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.5, 0.7)
DENSE = "dense"  # the task key of the unpruned working model (every ratio-0 point)


def check_ratios(ratios) -> tuple:
    """Sorted distinct ratios, each a finite fraction in [0, 1)."""
    out = set()
    for r in ratios:
        try:
            v = float(r)
        except (TypeError, ValueError):
            raise BadArgumentError(f"ratios must be numbers in [0, 1), got '{r}'") from None
        if not math.isfinite(v) or not 0.0 <= v < 1.0:
            raise BadArgumentError(f"ratios must be in [0, 1), got {r}")
        out.add(v)
    if not out:
        raise BadArgumentError("give at least one ratio to sweep")
    return tuple(sorted(out))


def sensitivity(model: ModelSource, calibration, *, criterion: str = "l2", ratios=DEFAULT_RATIOS,
                metric: str = "agreement", labels: str | None = None, batch_size: int = 16,
                max_samples: int | None = None, input_shapes: dict | None = None, jobs: int = 1,
                device: str = "cpu", progress: bool | None = None, groups=None, reduction: str = "sum",
                normalize: str = "mean", loss: str = "auto", fallback_criterion: str | None = None,
                prune_norm_spaces: bool = False, image_options=None, target_macs: float | None = None,
                round_to: int = 1, min_keep: int = 1, max_ratio: float = 0.9, folds: int = 1,
                ray: str | None = None, head_mode: str = "heads") -> dict:
    """Prune every prunable group (or the ids in ``groups``) alone at each of ``ratios``
    (exact ratios: kept counts rounded to the nearest channel, ``round_to`` 1, no cap) and
    measure ``metric`` of the pruned model against the dense one on ``calibration`` data.

    Returns a JSON-ready dict: ``dense`` (the metric of the dense model against itself,
    its MACs), and per group its id, name, channels, MACs share and one point per ratio
    with the kept count (per class), the metric ``value``, its ``drop`` (how much worse
    than dense; MSE itself for ``mse``) and the whole model's MACs ratio.

    With ``target_macs`` the curves are also turned into an allocation
    (:func:`~onnxprune.sensitivity_alloc.allocate_from_sensitivity` with ``round_to``,
    ``min_keep``, ``max_ratio``) whose combined model is measured too: ``allocation``
    holds the counts, the predicted drop (sum of single-group drops) and the measured one.

    ``folds`` K >= 2 cross-validates the sweep. The calibration samples are dealt into K
    folds (sample i goes to fold i mod K; for a model that fixes its batch dimension, whole
    batches are dealt). For each fold, the statistics of a data-aware criterion
    (``activation``, ``wanda``, ``taylor``...) are collected on the other K-1 folds and
    decide which channels every candidate keeps, and the candidate's metric is measured
    against the dense model on the held-out fold only. Every ``value`` and ``drop`` (the
    dense point, each sweep point, the allocation's measured model) is the mean over the
    K folds weighted by fold size; each point also lists its ``fold_drops``. A weight-only
    criterion keeps the same channels in every fold, so for it only the measurement is
    split (each sample is still measured once; the spread of ``fold_drops`` shows how
    noisy the estimate is). The sweep never repairs weights, so no repair is involved;
    the curves (and the allocation from them) are what is cross-validated, not the final
    model ``prune`` writes, which is scored and repaired on all the data.

    ``jobs > 1`` (0: one per CPU core) evaluates candidates in worker processes started
    with ``forkserver`` (``spawn`` where it is missing): a script calling this must guard
    its entry point with ``if __name__ == "__main__":``. Each worker runs ONNX Runtime
    with ``cpu_count // jobs`` threads. ``ray`` (``auto`` or a cluster address; ``jobs``
    stays 1) runs them as one-CPU tasks on a Ray cluster instead (see
    :mod:`onnxprune.parallel`; :class:`~onnxprune.errors.ClusterError` when it cannot be
    reached). Results equal the serial run's either way.
    """
    t0 = time.perf_counter()
    ratios = check_ratios(ratios)
    runner = backend(jobs, ray)
    folds = check_folds(folds)
    if target_macs is not None and not 0.0 < target_macs <= 1.0:
        raise BadArgumentError(f"target_macs must be in (0, 1], got {target_macs:g}")
    if round_to < 1 or min_keep < 1:
        raise BadArgumentError("round_to and min_keep must be at least 1")
    if not 0.0 <= max_ratio < 1.0:
        raise BadArgumentError(f"max_ratio must be in [0, 1), got {max_ratio:g}")
    if max_samples is not None and max_samples < 1:
        raise BadArgumentError(f"max_samples must be at least 1, got {max_samples}")
    with runner:  # a Ray cluster is connected to (or found unreachable) before any work
        sweep = Sweep(model, calibration, criterion=criterion, metric=metric, labels=labels, batch_size=batch_size,
                      max_samples=max_samples, input_shapes=input_shapes, device=device, progress=progress,
                      reduction=reduction, normalize=normalize, loss=loss, fallback_criterion=fallback_criterion,
                      prune_norm_spaces=prune_norm_spaces, image_options=image_options, folds=folds,
                      head_mode=head_mode)
        chosen = sweep.select(groups)
        tasks, where = {}, {}
        for g in chosen:
            for r in ratios:
                k = allowed_count(g.size * (1 - r), g.size, 1, 1, 1.0)
                key = DENSE if k == g.size else (g.id, k)
                tasks.setdefault(key, {} if key == DENSE else {g.id: k})
                where[(g.id, r)] = (k, key)
        results = sweep.evaluate(tasks, runner, progress)
        share = group_macs_share(sweep.analysis, sweep.cost, sweep.dense_macs) if sweep.dense_macs else {}
        out_groups = []
        for g in chosen:
            points = []
            for r in ratios:
                k, key = where[(g.id, r)]
                value, drop, fold_drops = results[key]
                point = {"ratio": r, "kept": k, "value": value, "drop": drop,
                         "macs_ratio": sweep.macs_ratio({g.id: k})}
                if fold_drops is not None:
                    point["fold_drops"] = fold_drops
                points.append(point)
            out_groups.append({"id": g.id, "name": g.name, "kind": g.kind, "channels": g.channels, "size": g.size,
                               "classes": len(g.roots), "macs_share": share.get(g.id), "points": points})
        result = {
            "format": FORMAT, "version": VERSION, "model_fingerprint": sweep.fingerprint,
            "settings": {"criterion": criterion, "fallback_criterion": fallback_criterion, "reduction": reduction,
                         "normalize": normalize, "metric": metric, "ratios": list(ratios), "batch_size": batch_size,
                         "max_samples": max_samples, "input_shapes": input_shapes,
                         "prune_norm_spaces": prune_norm_spaces, "head_mode": head_mode, "device": device, "folds": folds,
                         "jobs": runner.workers, "ray": ray},
            "samples": sweep.samples, "synthetic_data": sweep.synthetic,
            "dense": {"value": sweep.dense_value, "macs": sweep.dense_macs},
            "candidates": len(tasks), "groups": out_groups,
            "skipped": {str(k): v for k, v in sweep.skipped.items()},
        }
        if folds > 1:
            result["fold_samples"] = [f.samples for f in sweep.folds]
        if target_macs is not None:
            result["allocation"] = sweep.allocation(result, target_macs, round_to, min_keep, max_ratio, runner)
    result["seconds"] = time.perf_counter() - t0
    return result


def check_folds(folds) -> int:
    """``folds`` as an int >= 1 (1: no cross-validation)."""
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 1:
        raise BadArgumentError(f"folds must be an integer >= 1 (1: no cross-validation), got {folds}")
    return int(folds)


class Fold:
    """One held-out part of the calibration data (all of it without cross-validation):
    its batches, labels and dense outputs, and the data the statistics come from."""

    def __init__(self, batches, labels, dense, train_batches, train_labels):
        self.batches, self.labels, self.dense = batches, labels, dense
        self.train_batches, self.train_labels = train_batches, train_labels
        self.samples = sum(next(iter(b.values())).shape[0] for b in batches)


def split_folds(batches: list, labels, k: int, unit: int, batch_size: int) -> list:
    """[(batches, labels)] of ``k`` folds: samples (blocks of ``unit`` samples for models
    that fix the batch dimension) dealt round-robin, re-batched by ``batch_size``."""
    feeds = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    n = next(iter(feeds.values())).shape[0]
    units = n // unit
    if units < k:
        what = "samples" if unit == 1 else f"batches of {unit} samples (the model fixes its batch size)"
        raise BadArgumentError(f"--folds {k} needs at least {k} {what}; the data has {units}")
    out = []
    for f in range(k):
        idx = np.concatenate([np.arange(j * unit, (j + 1) * unit) for j in range(f, units, k)])
        part = {name: v[idx] for name, v in feeds.items()}
        fold_batches = [{name: v[i:i + batch_size] for name, v in part.items()} for i in range(0, len(idx), batch_size)]
        out.append((fold_batches, None if labels is None else np.asarray(labels)[idx]))
    return out


class Sweep:
    """Everything computed once: data, dense outputs, analysis, scores, cost model (and,
    with folds, the held-out parts and the scores from the rest of the data)."""

    def __init__(self, model, calibration, *, criterion, metric, labels, batch_size, max_samples, input_shapes,
                 device, progress, reduction, normalize, loss, fallback_criterion, prune_norm_spaces,
                 image_options, folds=1, head_mode="heads"):
        from .api import _analysis, _nothing_prunable

        check_criterion(criterion)
        if fallback_criterion is not None:
            check_criterion(fallback_criterion)
        if metric not in METRICS:
            raise BadArgumentError(f"unknown metric '{metric}' (choose from {', '.join(METRICS)})")
        if metric in LABEL_METRICS and labels is None:
            raise BadArgumentError(f"metric '{metric}' needs labels (--labels KEY in the data)")
        if batch_size < 1:
            raise BadArgumentError("batch_size must be at least 1")
        if calibration is None:
            raise BadArgumentError("the sweep needs calibration data (--calib)")
        self.metric, self.device = metric, device
        self.options = (input_shapes, prune_norm_spaces, head_mode)
        proto = load_model(model)
        self.fingerprint = model_fingerprint(proto)
        self.model_bytes = proto.SerializeToString()  # the dense model, for worker processes
        data = load_data(calibration, proto, labels_key=labels, batch_size=batch_size, max_samples=max_samples,
                         input_shapes=input_shapes, image_options=image_options)
        self.batches = [dict(b) for b in data.batches]  # decoded once (image folders decode on access)
        self.labels, self.synthetic = data.labels, data.synthetic
        self.samples = sum(next(iter(b.values())).shape[0] for b in self.batches)
        dense_session = session(proto, device)
        self.dense = run_batches(dense_session, self.batches)
        self.dense_value, drop = measure(self.dense, self.dense, self.labels, metric)
        if drop is None:
            raise BadArgumentError(f"metric '{metric}' does not apply to this model's outputs "
                                   "(agreement needs class scores of shape [N, classes])")
        if folds == 1:
            self.folds = [Fold(self.batches, self.labels, self.dense, self.batches, self.labels)]
        else:
            fixed = {dims[0] for _, dims in model_inputs(proto).values() if dims and dims[0] is not None}
            unit = fixed.pop() if len(fixed) == 1 else 1
            parts = split_folds(self.batches, self.labels, folds, unit, len(next(iter(self.batches[0].values()))))
            self.folds = []
            for f, (held, held_labels) in enumerate(parts):
                rest = [p for j, p in enumerate(parts) if j != f]
                train_labels = None if self.labels is None else np.concatenate([p[1] for p in rest])
                self.folds.append(Fold(held, held_labels, run_batches(dense_session, held),
                                       [b for p in rest for b in p[0]], train_labels))
            self.dense_value = self.combine([measure(f.dense, f.dense, f.labels, metric) for f in self.folds])[0]
        del dense_session
        self.analysis = _analysis(proto, input_shapes, prune_norm_spaces, in_place=True, head_mode=head_mode)
        del proto
        if not self.analysis.prunable:
            raise _nothing_prunable(self.analysis)
        self.needs = tuple(dict.fromkeys(NEEDS[criterion] + (NEEDS[fallback_criterion] if fallback_criterion
                                                              else ())))
        self.scoring = (criterion, fallback_criterion, reduction, normalize, loss, progress)
        self.fold_scores = [self.score(f.train_batches, f.train_labels)[0] for f in self.folds] \
            if self.needs and folds > 1 else None
        self.scores, self.skipped = self.score(self.batches, self.labels)  # all the data, set last
        self.cost = CostModel(self.analysis)
        self.dense_macs = self.cost.macs(counter(self.analysis, {})) if self.cost.macs_known else None

    def score(self, batches, labels) -> tuple:
        """(scores, skipped) of the criterion, its statistics collected on ``batches``."""
        criterion, fallback_criterion, reduction, normalize, loss, progress = self.scoring
        if self.needs:
            from .calibration.collect import collect

            self.analysis.calibration = collect(self.analysis, self.analysis.prunable,
                                                Dataset(batches, labels, self.synthetic), self.needs,
                                                loss=loss, device=self.device, progress=progress)
        skipped: dict = {}
        scores = score_groups(self.analysis, criterion, reduction, normalize, skipped=skipped)
        if skipped and fallback_criterion:
            scores.update(score_groups(self.analysis, fallback_criterion, reduction, normalize, skipped={},
                                       groups=[g for g in self.analysis.prunable if g.id in skipped]))
        return scores, {gid: why for gid, why in skipped.items() if gid not in scores}

    def select(self, ids) -> list:
        groups = [g for g in self.analysis.prunable if g.id in self.scores]
        if ids is not None:
            by_id = {g.id: g for g in self.analysis.groups}
            for gid in ids:
                if gid not in by_id:
                    raise BadArgumentError(f"no group {gid} in this model (see onnxprune inspect)")
                if not by_id[gid].prunable:
                    raise BadArgumentError(f"group {gid} is blocked: {by_id[gid].blocked[0]}")
                if gid not in self.scores:
                    raise BadArgumentError(f"group {gid}: the criterion cannot score it ({self.skipped.get(gid)})")
            wanted = set(ids)
            groups = [g for g in groups if g.id in wanted]
        if not groups:
            raise NothingPrunableError("nothing to sweep: the criterion scores no prunable group")
        return groups

    def macs_ratio(self, counts: dict) -> float | None:
        if not self.dense_macs:
            return None
        kept = {r: counts[g.id] for g in self.analysis.prunable if g.id in counts for r in g.roots}
        return self.cost.macs(counter(self.analysis, kept)) / self.dense_macs

    def plan_groups(self, counts: dict, fold: int | None = None) -> dict:
        """{gid: keep lists} of the highest-scoring channels for kept counts per group
        (scored on all the data, or on the data outside ``fold``)."""
        scores = self.scores if fold is None or self.fold_scores is None else self.fold_scores[fold]
        out = {}
        for gid, k in counts.items():
            g = self.analysis.group(gid)
            if k < g.size:
                out[gid] = select_channels(g, scores.get(gid, self.scores[gid]), k)
        return out

    def evaluate(self, tasks: dict, runner=None, progress=None) -> dict:
        """{key: (value, drop, fold drops or None)} of every task (key -> {gid: kept
        count}; {} is the unpruned working model), with ``runner`` (a
        :class:`~onnxprune.parallel.Backend`; this process when None)."""
        k = len(self.folds)
        items = []  # (key, folds measured, keep lists): one per candidate, or per candidate and fold
        for key, counts in tasks.items():
            if self.fold_scores is None:  # the same channels in every fold: one model measures them all
                items.append((key, tuple(range(k)), self.plan_groups(counts)))
            else:
                items += [(key, (f,), self.plan_groups(counts, f)) for f in range(k)]
        bar = Progress(len(items), "sensitivity candidate", progress)
        if runner is None or len(items) <= 1:
            runner = Serial()
        sizes = {g.id: (g.size, len(g.roots)) for g in self.analysis.prunable}
        setup_args = (self.model_bytes, self.options, sizes, [(f.batches, f.dense, f.labels) for f in self.folds],
                      self.metric, self.device)
        local = {"analysis": self.analysis, "folds": [(f.batches, f.dense, f.labels) for f in self.folds],
                 "metric": self.metric, "device": self.device, "threads": None}
        results = runner.map(_evaluate_task, [(folds, groups) for _, folds, groups in items], _worker_setup,
                             setup_args, local=local, on_result=bar.step)
        bar.close()
        per_key: dict = {key: [None] * k for key in tasks}
        for (key, folds, _), measured in zip(items, results):
            for f, r in zip(folds, measured):
                per_key[key][f] = r
        return {key: self.combine(rs) for key, rs in per_key.items()}

    def combine(self, per_fold: list) -> tuple:
        """(value, drop, fold drops) of one candidate from its (value, drop) per fold: the
        means weighted by fold size (as measured, without folds)."""
        if len(per_fold) == 1:
            return per_fold[0][0], per_fold[0][1], None
        if any(v is None or d is None for v, d in per_fold):
            return None, None, [d for _, d in per_fold]
        w = np.array([f.samples for f in self.folds], dtype=np.float64)
        w /= w.sum()
        value = float(np.dot(w, [v for v, _ in per_fold]))
        drop = float(np.dot(w, [d for _, d in per_fold]))
        return value, drop, [float(d) for _, d in per_fold]

    def allocation(self, sens: dict, target_macs: float, round_to: int, min_keep: int, max_ratio: float,
                   runner=None) -> dict:
        """Greedy allocation from the curves, with its combined model measured."""
        from .sensitivity_alloc import allocate_from_sensitivity

        details: dict = {}
        counts = allocate_from_sensitivity(sens, target_macs, analysis=self.analysis, round_to=round_to,
                                           min_keep=min_keep, max_ratio=max_ratio, details=details)
        value, drop, fold_drops = self.evaluate({"allocation": counts}, runner)["allocation"]
        out = {**details, "round_to": round_to, "min_keep": min_keep, "max_ratio": max_ratio,
               "counts": {str(gid): k for gid, k in sorted(counts.items())},
               "measured_value": value, "measured_drop": drop}
        if fold_drops is not None:
            out["measured_fold_drops"] = fold_drops
        return out


# ---- evaluating one candidate (in this process or in a worker) -----------------------

def run_batches(sess, batches: list) -> dict:
    """{output name: outputs of all batches, concatenated}."""
    names = [o.name for o in sess.get_outputs()]
    outs: dict = {n: [] for n in names}
    for feeds in batches:
        for n, v in zip(names, sess.run(None, feeds)):
            outs[n].append(np.asarray(v))
    return {n: np.concatenate(v) for n, v in outs.items()}


def measure(dense: dict, outs: dict, labels, metric: str) -> tuple:
    """(value, drop) of ``metric`` for ``outs`` against ``dense`` (validate's helpers)."""
    names = list(dense)
    result = {"outputs": [_compare(n, dense[n], outs[n]) for n in names],
              "classifier": _classifier(dense[names[0]], outs[names[0]], labels)}
    drop = metric_drop(result, metric)
    if drop is None:
        return None, None
    cls = result["classifier"] or {}
    if metric == "agreement":
        value = cls["top1_agreement"]
    elif metric in LABEL_METRICS:
        value = cls[f"{metric}_after"]
    elif metric == "cosine":
        value = 1.0 - drop
    else:  # mse: lower is better, its drop is the value itself
        value = drop
    return float(value), float(drop)


def evaluate_plan(analysis, plan_groups: dict, batches, dense, labels, metric, device, threads=None) -> tuple:
    """(value, drop) of the working model pruned to ``plan_groups`` ({gid: keep lists})."""
    sess = _pruned_session(analysis, plan_groups, device, threads)
    return measure(dense, run_batches(sess, batches), labels, metric)


def _pruned_session(analysis, plan_groups: dict, device, threads):
    from .surgery import apply_plan

    plan = Plan("", {gid: {"size": analysis.group(gid).size, "keep": keep} for gid, keep in plan_groups.items()})
    return session(apply_plan(analysis, plan, consume=False), device, threads)


def _worker_setup(threads, model_bytes, options, sizes, folds, metric, device) -> dict:
    """A worker's state (see :mod:`onnxprune.parallel`): the analysis re-run on the dense
    model, the held-out data of every fold with its dense outputs."""
    from .api import _analysis

    input_shapes, prune_norm_spaces, head_mode = options
    proto = onnx.ModelProto()
    proto.ParseFromString(model_bytes)
    analysis = _analysis(proto, input_shapes, prune_norm_spaces, in_place=True, head_mode=head_mode)
    mine = {g.id: (g.size, len(g.roots)) for g in analysis.prunable}
    if mine != sizes:  # the analysis is deterministic; this guards against that ever breaking
        raise RuntimeError("worker analysis differs from the parent's")
    return {"analysis": analysis, "folds": folds, "metric": metric, "device": device, "threads": threads}


def _evaluate_task(state: dict, task) -> list:
    """[(value, drop)] of one candidate on each of the folds the task names."""
    folds, groups = task
    sess = _pruned_session(state["analysis"], groups, state["device"], state["threads"])
    out = []
    for f in folds:
        batches, dense, labels = state["folds"][f]
        out.append(measure(dense, run_batches(sess, batches), labels, state["metric"]))
    return out


from .sensitivity_alloc import allocate_from_sensitivity  # noqa: E402  (the API's second half)

__all__ = ["sensitivity", "allocate_from_sensitivity", "check_ratios", "check_folds", "DEFAULT_RATIOS"]
