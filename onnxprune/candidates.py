"""Candidate models measured against the dense one: what ``--allocation search`` and the
``--max-drop`` budget evaluate.

A candidate is kept counts per group. It is made from the analysis already in memory
(surgery on a copy, ``apply_plan(consume=False)``: the model file is read once, by
``prune``), repaired like the final model when ``repair`` is given (the repaired metric is
what the user gets; on trained models the unrepaired one ranks allocations differently),
run in ONNX Runtime on the measurement data and compared with the dense outputs, which are
computed once.

Candidates are independent, so a batch of them runs through :mod:`onnxprune.parallel`: in
this process (reusing the parent's analysis), in worker processes or on a Ray cluster,
whose workers re-run the deterministic analysis once on the dense model and keep it for
every candidate they measure. A task is only which channels each group keeps. Results
equal the serial run's.
"""

from __future__ import annotations

import numpy as np
import onnx

from .allocate import select_channels
from .data import Dataset
from .parallel import Serial, backend
from .plan import Plan


class Candidates:
    """Measures candidates (see the module docstring). ``data``: the measurement
    :class:`~onnxprune.data.Dataset`; ``repair``: ``(calibration Dataset, RecoverOptions)``
    or None; ``jobs``/``ray``: where batches of candidates run."""

    def __init__(self, analysis, groups, scores: dict, reference: onnx.ModelProto, data: Dataset, metric: str,
                 device: str = "cpu", repair=None, jobs: int = 1, ray: str | None = None,
                 input_shapes: dict | None = None, prune_norm_spaces: bool = False, head_mode: str = "heads"):
        from .runtime import session
        from .sensitivity import run_batches

        self.device = "cpu" if device == "auto" else device
        self.by_id = {g.id: g for g in groups}
        self.scores = scores
        self.runner = backend(jobs, ray)
        batches = [dict(b) for b in data.batches]  # decoded once
        dense = run_batches(session(reference, self.device), batches)
        self.measured = (batches, dense, data.labels)
        repair_spec = None if repair is None else ([dict(b) for b in repair[0].batches], repair[0].labels, repair[1])
        self.local = {"analysis": analysis, "reference": reference, "measured": self.measured, "metric": metric,
                      "device": self.device, "repair": repair_spec, "threads": None}
        self._setup_args = None if isinstance(self.runner, Serial) else (
            reference.SerializeToString(), (input_shapes, prune_norm_spaces, head_mode),
            {g.id: (g.size, len(g.roots)) for g in analysis.prunable}, self.measured, metric, self.device,
            repair_spec)
        self.repaired = repair is not None
        self.evaluated = 0
        self._open = False

    def describe(self) -> str:
        return self.runner.describe()

    def keep(self, counts: dict) -> dict:
        """{gid: keep lists} of the highest-scoring channels for kept counts per group."""
        return {gid: select_channels(self.by_id[gid], self.scores[gid], k) for gid, k in counts.items()
                if k < self.by_id[gid].size}

    def measure(self, counts_list: list) -> list:
        """(metric drop, mean squared output error) of each candidate (kept counts per
        group id), in order; the drop is None where the metric does not apply. The error
        ranks candidates the metric ties (top-1 agreement on a few samples moves in steps)."""
        tasks = [self.keep(c) for c in counts_list]
        self.evaluated += len(tasks)
        if isinstance(self.runner, Serial) or len(tasks) <= 1:
            return [_measure_task(self.local, t) for t in tasks]
        if not self._open:  # workers (and their analysis) live until close()
            self.runner.__enter__()
            self._open = True
        return self.runner.map(_measure_task, tasks, _worker_setup, self._setup_args)

    def drops(self, counts_list: list) -> list:
        return [d for d, _ in self.measure(counts_list)]

    def drop(self, counts: dict):
        return self.drops([counts])[0]

    def close(self) -> None:
        if self._open:
            self._open = False
            self.runner.__exit__(None, None, None)


def _worker_setup(threads, model_bytes, options, sizes, measured, metric, device, repair) -> dict:
    """A worker's state: the analysis re-run on the dense model (deterministic; checked)."""
    from .api import _analysis

    input_shapes, prune_norm_spaces, head_mode = options
    reference = onnx.ModelProto()
    reference.ParseFromString(model_bytes)
    analysis = _analysis(onnx.ModelProto.FromString(model_bytes), input_shapes, prune_norm_spaces, in_place=True,
                         head_mode=head_mode)
    if {g.id: (g.size, len(g.roots)) for g in analysis.prunable} != sizes:
        raise RuntimeError("worker analysis differs from the parent's")
    return {"analysis": analysis, "reference": reference, "measured": measured, "metric": metric, "device": device,
            "repair": repair, "threads": threads}


def _measure_task(state: dict, keep: dict):
    """(metric drop, mean squared error of the outputs) of the dense model pruned to
    ``keep`` ({gid: keep lists}), repaired first when the state says so."""
    from .runtime import session
    from .sensitivity import measure, run_batches
    from .surgery import apply_plan

    analysis = state["analysis"]
    plan = Plan("", {gid: {"size": analysis.group(gid).size, "keep": k} for gid, k in keep.items()}, {})
    model = apply_plan(analysis, plan, consume=False)
    if state["repair"] is not None and keep:
        from .recover.run import recover
        from .recover.targets import repair_targets

        batches, labels, options = state["repair"]
        model, _ = recover(state["reference"], model, repair_targets(analysis, plan), Dataset(batches, labels),
                           options, device=state["device"], progress=False)
    batches, dense, labels = state["measured"]
    outs = run_batches(session(model, state["device"], state["threads"]), batches)
    error = float(np.mean([np.mean((dense[n].astype(np.float64) - outs[n]) ** 2) for n in dense]))
    return measure(dense, outs, labels, state["metric"])[1], error


__all__ = ["Candidates"]
