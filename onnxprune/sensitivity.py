"""Sensitivity sweep: how much the chosen metric suffers when each group alone loses a
ladder of ratios of its channels, measured against the dense model on calibration data.

The model is analyzed and scored once, the dense outputs are computed once; each
candidate is then surgery on a copy (``apply_plan(consume=False)``), an ONNX Runtime
session and one pass over the data. Candidates are independent: ``jobs > 1`` evaluates
them in worker processes that each receive the serialized dense model, the data and the
dense outputs once (through the pool initializer) and re-run the deterministic analysis;
a task is just ``(group id, kept indices)``. Results equal the serial run's.

:func:`allocate_from_sensitivity` (in :mod:`onnxprune.sensitivity_alloc`) turns the curves
into per-group kept counts under a MACs target.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import onnx

from .allocate import allowed_count, select_channels
from .cost import CostModel, counter
from .data import Dataset, load_data
from .errors import BadArgumentError, NothingPrunableError
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
                round_to: int = 1, min_keep: int = 1, max_ratio: float = 0.9) -> dict:
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

    ``jobs > 1`` (0: one per CPU core) evaluates candidates in worker processes started
    with ``forkserver`` (``spawn`` where it is missing): a script calling this must guard
    its entry point with ``if __name__ == "__main__":``. Each worker runs ONNX Runtime
    with ``cpu_count // jobs`` threads; results equal the serial run's.
    """
    t0 = time.perf_counter()
    ratios = check_ratios(ratios)
    if jobs < 0:
        raise BadArgumentError(f"jobs must be >= 0 (0: one per CPU core), got {jobs}")
    jobs = jobs or (os.cpu_count() or 1)
    if target_macs is not None and not 0.0 < target_macs <= 1.0:
        raise BadArgumentError(f"target_macs must be in (0, 1], got {target_macs:g}")
    if round_to < 1 or min_keep < 1:
        raise BadArgumentError("round_to and min_keep must be at least 1")
    if not 0.0 <= max_ratio < 1.0:
        raise BadArgumentError(f"max_ratio must be in [0, 1), got {max_ratio:g}")
    if max_samples is not None and max_samples < 1:
        raise BadArgumentError(f"max_samples must be at least 1, got {max_samples}")
    sweep = Sweep(model, calibration, criterion=criterion, metric=metric, labels=labels, batch_size=batch_size,
                  max_samples=max_samples, input_shapes=input_shapes, device=device, progress=progress,
                  reduction=reduction, normalize=normalize, loss=loss, fallback_criterion=fallback_criterion,
                  prune_norm_spaces=prune_norm_spaces, image_options=image_options)
    chosen = sweep.select(groups)
    tasks, where = {}, {}
    for g in chosen:
        for r in ratios:
            k = allowed_count(g.size * (1 - r), g.size, 1, 1, 1.0)
            key = DENSE if k == g.size else (g.id, k)
            tasks.setdefault(key, None if key == DENSE else select_channels(g, sweep.scores[g.id], k))
            where[(g.id, r)] = (k, key)
    results = sweep.evaluate(tasks, jobs, progress)
    share = group_macs_share(sweep.analysis, sweep.cost, sweep.dense_macs) if sweep.dense_macs else {}
    out_groups = []
    for g in chosen:
        points = []
        for r in ratios:
            k, key = where[(g.id, r)]
            value, drop = results[key]
            points.append({"ratio": r, "kept": k, "value": value, "drop": drop,
                           "macs_ratio": sweep.macs_ratio({g.id: k})})
        out_groups.append({"id": g.id, "name": g.name, "kind": g.kind, "channels": g.channels, "size": g.size,
                           "classes": len(g.roots), "macs_share": share.get(g.id), "points": points})
    result = {
        "format": FORMAT, "version": VERSION, "model_fingerprint": sweep.fingerprint,
        "settings": {"criterion": criterion, "fallback_criterion": fallback_criterion, "reduction": reduction,
                     "normalize": normalize, "metric": metric, "ratios": list(ratios), "batch_size": batch_size,
                     "max_samples": max_samples, "input_shapes": input_shapes, "prune_norm_spaces": prune_norm_spaces,
                     "device": device, "jobs": jobs},
        "samples": sweep.samples, "synthetic_data": sweep.synthetic,
        "dense": {"value": sweep.dense_value, "macs": sweep.dense_macs},
        "candidates": len(tasks), "groups": out_groups, "skipped": {str(k): v for k, v in sweep.skipped.items()},
    }
    if target_macs is not None:
        result["allocation"] = sweep.allocation(result, target_macs, round_to, min_keep, max_ratio)
    result["seconds"] = time.perf_counter() - t0
    return result


class Sweep:
    """Everything computed once: data, dense outputs, analysis, scores, cost model."""

    def __init__(self, model, calibration, *, criterion, metric, labels, batch_size, max_samples, input_shapes,
                 device, progress, reduction, normalize, loss, fallback_criterion, prune_norm_spaces,
                 image_options):
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
        self.options = (input_shapes, prune_norm_spaces)
        proto = load_model(model)
        self.fingerprint = model_fingerprint(proto)
        self.model_bytes = proto.SerializeToString()  # the dense model, for worker processes
        data = load_data(calibration, proto, labels_key=labels, batch_size=batch_size, max_samples=max_samples,
                         input_shapes=input_shapes, image_options=image_options)
        self.batches = [dict(b) for b in data.batches]  # decoded once (image folders decode on access)
        self.labels, self.synthetic = data.labels, data.synthetic
        self.samples = sum(next(iter(b.values())).shape[0] for b in self.batches)
        self.dense = run_batches(session(proto, device), self.batches)
        self.dense_value, drop = measure(self.dense, self.dense, self.labels, metric)
        if drop is None:
            raise BadArgumentError(f"metric '{metric}' does not apply to this model's outputs "
                                   "(agreement needs class scores of shape [N, classes])")
        self.analysis = _analysis(proto, input_shapes, prune_norm_spaces, in_place=True)
        del proto
        if not self.analysis.prunable:
            raise _nothing_prunable(self.analysis)
        needs = tuple(dict.fromkeys(NEEDS[criterion] + (NEEDS[fallback_criterion] if fallback_criterion else ())))
        if needs:
            from .calibration.collect import collect

            self.analysis.calibration = collect(self.analysis, self.analysis.prunable,
                                                Dataset(self.batches, self.labels, self.synthetic), needs,
                                                loss=loss, device=device, progress=progress)
        self.skipped: dict = {}
        self.scores = score_groups(self.analysis, criterion, reduction, normalize, skipped=self.skipped)
        if self.skipped and fallback_criterion:
            self.scores.update(score_groups(self.analysis, fallback_criterion, reduction, normalize, skipped={},
                                            groups=[g for g in self.analysis.prunable if g.id in self.skipped]))
        self.skipped = {gid: why for gid, why in self.skipped.items() if gid not in self.scores}
        self.cost = CostModel(self.analysis)
        self.dense_macs = self.cost.macs(counter(self.analysis, {})) if self.cost.macs_known else None

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

    def plan_groups(self, counts: dict) -> dict:
        """{gid: keep lists} of the highest-scoring channels for kept counts per group."""
        out = {}
        for gid, k in counts.items():
            g = self.analysis.group(gid)
            if k < g.size:
                out[gid] = select_channels(g, self.scores[gid], k)
        return out

    def evaluate(self, tasks: dict, jobs: int, progress) -> dict:
        """{key: (value, drop)} of every task (key -> {gid: keep lists}, a single group's
        keep lists with the key (gid, k), or None for the unpruned working model)."""
        items = [(key, _as_groups(key, keep)) for key, keep in tasks.items()]
        bar = Progress(len(items), "sensitivity candidate", progress)
        out = {}
        jobs = min(jobs, len(items))
        if jobs <= 1:
            for key, groups in items:
                out[key] = evaluate_plan(self.analysis, groups, self.batches, self.dense, self.labels, self.metric,
                                         self.device)
                bar.step()
        else:
            import multiprocessing as mp

            ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
            threads = max(1, (os.cpu_count() or 1) // jobs)
            sizes = {g.id: (g.size, len(g.roots)) for g in self.analysis.prunable}
            init = (self.model_bytes, self.options, sizes, self.batches, self.dense, self.labels, self.metric,
                    self.device, threads)
            with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=init) as pool:
                futures = {pool.submit(_worker_task, groups): key for key, groups in items}
                try:
                    for f in as_completed(futures):
                        out[futures[f]] = f.result()
                        bar.step()
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
        bar.close()
        return out

    def allocation(self, sens: dict, target_macs: float, round_to: int, min_keep: int, max_ratio: float) -> dict:
        """Greedy allocation from the curves, with its combined model measured."""
        from .sensitivity_alloc import allocate_from_sensitivity

        details: dict = {}
        counts = allocate_from_sensitivity(sens, target_macs, analysis=self.analysis, round_to=round_to,
                                           min_keep=min_keep, max_ratio=max_ratio, details=details)
        value, drop = evaluate_plan(self.analysis, self.plan_groups(counts), self.batches, self.dense, self.labels,
                                    self.metric, self.device)
        return {**details, "round_to": round_to, "min_keep": min_keep, "max_ratio": max_ratio,
                "counts": {str(gid): k for gid, k in sorted(counts.items())},
                "measured_value": value, "measured_drop": drop}


def _as_groups(key, keep) -> dict:
    if key == DENSE:
        return {}
    if isinstance(key, tuple):
        return {key[0]: keep}
    return keep


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
    plan = Plan("", {gid: {"size": analysis.group(gid).size, "keep": keep} for gid, keep in plan_groups.items()})
    from .surgery import apply_plan

    pruned = apply_plan(analysis, plan, consume=False)
    outs = run_batches(session(pruned, device, threads), batches)
    return measure(dense, outs, labels, metric)


_WORKER: dict = {}


def _worker_init(model_bytes, options, sizes, batches, dense, labels, metric, device, threads) -> None:
    from .api import _analysis

    input_shapes, prune_norm_spaces = options
    proto = onnx.ModelProto()
    proto.ParseFromString(model_bytes)
    analysis = _analysis(proto, input_shapes, prune_norm_spaces, in_place=True)
    mine = {g.id: (g.size, len(g.roots)) for g in analysis.prunable}
    if mine != sizes:  # the analysis is deterministic; this guards against that ever breaking
        raise RuntimeError("worker analysis differs from the parent's")
    _WORKER.update(analysis=analysis, batches=batches, dense=dense, labels=labels, metric=metric, device=device,
                   threads=threads)


def _worker_task(groups: dict) -> tuple:
    w = _WORKER
    return evaluate_plan(w["analysis"], groups, w["batches"], w["dense"], w["labels"], w["metric"], w["device"],
                         w["threads"])


from .sensitivity_alloc import allocate_from_sensitivity  # noqa: E402  (the API's second half)

__all__ = ["sensitivity", "allocate_from_sensitivity", "check_ratios", "DEFAULT_RATIOS"]
