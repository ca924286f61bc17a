"""The sequential repair driver.

Jobs (one per node to repair) run in *waves*: a wave holds every pending job whose inputs
do not depend on another pending job's node, so all of them can be measured in one ONNX
Runtime pass of the current (pruned, already repaired) model and one pass of the dense
model, each truncated to the nodes the wave needs and exposing its tensors as outputs.
Statistics are reduced batch by batch; after the pass every job of the wave writes its
result, and the next wave sees the repaired model. Inputs thus come from the pruned and
repaired model, targets from the dense one (He et al. 2017; Kwon et al. 2022).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import onnx

from ..analysis import name_nodes
from ..errors import BadArgumentError
from ..progress import Progress
from .graphs import GraphIndex
from .jobs import BatchNormJob, LinearJob
from .linear import Chain, Linear, downstream_targets, find_chain
from .passes import StreamedModel, calibration_batches
from .solve import RIDGE_GRID
from .tokens import AUTO, find_token_mask

STEPS = ("reconstruct", "bias", "bn", "bn_folded")
DEFAULT_STEPS = ("reconstruct", "bias", "bn")


@dataclass
class RecoverOptions:
    # which repairs run: least squares, FLAP bias, BatchNormalization statistics, and the
    # per-channel mean/std fix of convs whose BN the exporter folded (opt-in: measured to
    # hurt MobileNetV2 without reconstruction, and to change nothing after it)
    steps: tuple = DEFAULT_STEPS
    # relative ridge toward the dense weights (× the mean input variance); None: chosen per
    # layer by cross-validation over ridge_grid (held-out samples of the calibration data)
    ridge: float | None = 0.1
    ridge_grid: tuple = RIDGE_GRID  # the values cross-validation chooses from
    folds: int = 4  # cross-validation folds (samples dealt round-robin); <2 fits in-sample
    max_samples: int | None = None  # calibration samples used (None: all)
    absorb_residual: bool = True  # fit a layer feeding a residual Add to the Add's dense output
    inputs: str = "pruned"  # "dense": fit each layer on the dense model's inputs (not sequential)
    scope: str = "downstream"  # also refit layers whose input changed but was not cut ("targets": only those cut)
    max_dim: int = 8192  # layers with more design columns (inputs × kernel taps) get no least squares
    max_wave_bytes: int = 2 << 30  # statistics held at once by one wave
    cache_bytes: int = 1 << 30  # activations kept between passes, per model (dense, pruned)
    # graph input marking real tokens of padded sequence batches ("auto": an input named
    # *attention_mask; None: every row counts); see onnxprune.recover.tokens
    token_mask: str | None = AUTO

    def check(self) -> None:
        bad = [s for s in self.steps if s not in STEPS]
        if bad:
            raise BadArgumentError(f"unknown repair step '{bad[0]}' (choose from {', '.join(STEPS)})")
        if self.ridge is not None and not self.ridge >= 0:
            raise BadArgumentError(f"ridge must be ≥ 0, got {self.ridge}")
        if self.max_samples is not None and self.max_samples < 1:
            raise BadArgumentError("max_samples must be at least 1")
        if self.inputs not in ("pruned", "dense"):
            raise BadArgumentError(f"inputs must be 'pruned' or 'dense', got '{self.inputs}'")
        if self.scope not in ("targets", "downstream"):
            raise BadArgumentError(f"scope must be 'targets' or 'downstream', got '{self.scope}'")


def recover(dense: onnx.ModelProto, pruned: onnx.ModelProto, targets: dict, dataset,
            options: RecoverOptions | None = None, device: str = "cpu",
            progress: bool | None = None) -> tuple[onnx.ModelProto, dict]:
    """Repair ``pruned`` (not modified) against ``dense`` on ``dataset``'s batches.

    ``targets`` is :func:`onnxprune.recover.targets.repair_targets`'s result. Returns the
    repaired model and a JSON-able report: steps, per-layer calibration relative error
    ‖Y_dense − Y‖/‖Y_dense‖ before and after, the choice made (``reconstruct``, or a
    fallback: ``bias``, ``flap``, ``none``), and seconds."""
    options = options or RecoverOptions()
    options.check()
    t0 = time.perf_counter()
    ref = copy.deepcopy(dense)
    name_nodes(ref)
    model = copy.deepcopy(pruned)
    dindex, pindex = GraphIndex(ref), GraphIndex(model)
    folds = options.folds if options.folds >= 2 else 1
    alphas = tuple(options.ridge_grid) if options.ridge is None else (options.ridge,)
    if options.ridge is not None:
        folds = 1  # a fixed ridge needs no held-out choice
    mask = find_token_mask(ref, options.token_mask)
    jobs, skipped = _make_jobs(pindex, dindex, targets, options, folds, alphas)
    report = {"steps": [s for s in STEPS if s in options.steps], "ridge": "cv" if options.ridge is None else
              options.ridge, "folds": folds, "token_mask": mask, "layers": {}, "skipped": skipped, "waves": 0}
    deps = _dependencies(pindex, jobs)
    order = {j.node: pindex.order[j.node] for j in jobs}
    pending = sorted(jobs, key=lambda j: order[j.node])
    bar = Progress(len(jobs), "repairing layer", progress)
    batches = calibration_batches(dataset, options.max_samples)
    if not batches:
        raise BadArgumentError("recovery needs calibration samples; the data holds none")
    streams = (StreamedModel(options.cache_bytes, device), StreamedModel(options.cache_bytes, device))
    while pending:
        wave = _next_wave(pending, deps, options.max_wave_bytes)
        later = [j for j in pending if j not in wave]
        future = ({t for j in later for t in j.pruned_tensors()}, {t for j in later for t in j.dense_tensors()})
        _run_wave(model, pindex, ref, dindex, wave, batches, streams, future, mask)
        for job in wave:
            report["layers"][job.node] = job.finish(model, pindex)
            pindex = GraphIndex(model)
            bar.step()
        done = {j.node for j in wave}
        pending = [j for j in pending if j.node not in done]
        report["waves"] += 1
    bar.close()
    report["samples"] = batches[-1][0] + next(iter(batches[-1][1].values())).shape[0]
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return model, report


# ---- jobs -------------------------------------------------------------------------------
def _make_jobs(pindex: GraphIndex, dindex: GraphIndex, targets: dict, options, folds, alphas):
    jobs, skipped = [], {}
    gram = "reconstruct" in options.steps
    if options.scope == "downstream":
        targets = {**downstream_targets(pindex, dindex, targets), **targets}
    linear_steps = {"reconstruct", "bias", "bn_folded"} & set(options.steps)
    owned_bn: set[str] = set()
    for name, t in sorted(targets.items(), key=lambda kv: pindex.order.get(kv[0], 1 << 30)):
        why = Linear.unsupported(pindex, name) or (None if name in dindex.node else "not in the dense model")
        if why is None and (t.kept_in is None or len(t.kept_in) == 0):
            why = "no input survives"
        if why:
            skipped[name] = why
            continue
        unit = Linear(pindex, name, np.asarray(t.kept_in), None if t.kept_out is None else np.asarray(t.kept_out))
        W0, _ = unit.weights(pindex)
        c_dense = unit.math_weight(dindex.const(dindex.node[name].input[1])).shape[1]
        if W0.shape != (len(t.kept_in) * unit.taps(), c_dense if t.kept_out is None else len(t.kept_out)):
            skipped[name] = f"weight shape {list(W0.shape)} does not match the plan"
            continue
        if not linear_steps:
            continue
        steps = tuple(options.steps)
        if gram and W0.shape[0] > options.max_dim:
            steps = tuple(s for s in steps if s != "reconstruct")
            skipped[name] = f"no least squares: {W0.shape[0]} design columns > max_dim {options.max_dim}"
            if not {"bias", "bn_folded"} & set(steps):
                continue
        fits = "reconstruct" in steps
        chain = find_chain(pindex, unit, W0.shape[1]) if fits and options.absorb_residual else Chain()
        if fits:
            r = pindex.sole_reader(unit.out)
            if r is not None and r.op_type == "BatchNormalization":
                owned_bn.add(r.name)  # fitted through: the least squares already matches it
        dense_inputs = options.inputs == "dense"
        jobs.append(LinearJob(unit, t, Chain() if dense_inputs else chain, steps, folds, alphas, dindex, dense_inputs))
    if "bn" in options.steps:
        changed = pindex.descendants([j.node for j in jobs] or list(targets))
        for node in pindex.node.values():
            if node.op_type != "BatchNormalization" or node.name not in changed or node.name in owned_bn:
                continue
            why = BatchNormJob.unsupported(pindex, dindex, node.name)
            job = None if why else BatchNormJob(node.name, pindex, dindex)
            if job is not None and job.kept is None:
                why, job = "its channels could not be matched with the dense model's", None
            if why:
                skipped[node.name] = why
            else:
                jobs.append(job)
    return jobs, skipped


def _dependencies(index: GraphIndex, jobs) -> dict:
    """{job node: job nodes it must wait for}. A residual target whose skip input depends
    on a later job gives up absorbing (the fit would otherwise wait on itself)."""
    names = {j.node for j in jobs}
    deps = {}
    for j in jobs:
        anc = index.ancestors(j.pruned_tensors()) & names
        anc.discard(j.node)
        if isinstance(j, LinearJob) and j.absorbing and any(index.order[a] > index.order[j.node] for a in anc):
            j.chain = Chain()
            anc = index.ancestors(j.pruned_tensors()) & names
            anc.discard(j.node)
        deps[j.node] = anc
    return deps


def _next_wave(pending: list, deps: dict, budget: int) -> list:
    waiting = {j.node for j in pending}
    wave, used = [], 0
    for j in pending:
        if deps[j.node] & waiting:
            continue
        if wave and used + j.nbytes() > budget:
            break
        wave.append(j)
        used += j.nbytes()
    return wave


# ---- passes -------------------------------------------------------------------------------
def _run_wave(model, pindex, ref, dindex, wave, batches, streams, future, mask_input=None) -> None:
    pruned, dense = streams
    pruned.prepare(model, pindex, [t for j in wave for t in j.pruned_tensors()], future[0])
    dense.prepare(ref, dindex, [t for j in wave for t in j.dense_tensors()], future[1])
    for i, (offset, feeds) in enumerate(batches):
        p = pruned.run(i, feeds, len(batches))
        d = dense.run(i, feeds, len(batches))
        mask = None if mask_input is None else feeds.get(mask_input)
        for job in wave:
            job.accumulate(offset, p, d, mask)
    pruned.finish()
    dense.finish()
