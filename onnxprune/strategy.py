"""How much to cut where, for ``prune``: the kept counts of the chosen strategy at a MACs
target (uniform, global, sensitivity, search), or the ratio/target of ``AllocationOptions``.

:class:`Strategy` holds what a strategy needs once (the sensitivity sweep, the candidate
pools that measure pruned models), so that the ``--max-drop`` budget
(:mod:`onnxprune.budget`) can ask for several targets without recomputing it.
"""

from __future__ import annotations

from dataclasses import replace

from .allocate import allocate, give_back
from .errors import BadArgumentError


class Strategy:
    """``counts_at(target)`` for one strategy over a scored analysis. ``ctx`` carries
    prune's inputs (see :func:`onnxprune.api.prune`)."""

    def __init__(self, name: str, analysis, groups, scores: dict, opts, cost, count_of_factory, ctx: dict):
        self.name, self.analysis, self.groups, self.scores = name, analysis, groups, scores
        self.opts, self.cost, self.count_of_factory, self.ctx = opts, cost, count_of_factory, ctx
        self.curves = self.search_history = None
        self._sens = None
        self._pools: dict = {}
        self.dense_macs = cost.macs(count_of_factory({})) if cost.macs_known else None

    def fraction(self, counts: dict) -> float | None:
        if not self.dense_macs:
            return None
        return self.cost.macs(self.count_of_factory(counts)) / self.dense_macs

    def pool(self, data, repaired: bool):
        """The :class:`~onnxprune.candidates.Candidates` measuring on ``data`` (one per
        data set: the dense outputs are computed once)."""
        from .candidates import Candidates

        key = (id(data), repaired)
        if key not in self._pools:
            c = self.ctx
            repair = None
            if repaired:
                from .recover.run import RecoverOptions

                repair = (c["calib_data"], c["recover_options"] or RecoverOptions())
            self._pools[key] = Candidates(self.analysis, self.groups, self.scores, c["reference"], data, c["metric"],
                                          c["device"], repair, c["jobs"], c["ray"], c["input_shapes"],
                                          c["prune_norm_spaces"], c["head_mode"])
        return self._pools[key]

    def close(self) -> None:
        """Stop the worker processes of the candidate pools."""
        for pool in self._pools.values():
            pool.close()

    def counts(self, latency_ratio=None) -> tuple[dict, dict]:
        """Counts for the options' ratio or target."""
        if self.name in ("sensitivity", "search"):
            return self.counts_at(self.opts.target_macs)
        return allocate(self.groups, self.scores, self.opts, self.cost, self.count_of_factory, latency_ratio)

    def counts_at(self, target: float) -> tuple[dict, dict]:
        """Counts keeping at most ``target`` of the MACs (BadArgumentError when out of reach)."""
        if self.name == "sensitivity":
            return self._sensitivity(target)
        if self.name == "search":
            return self._search(target)
        opts = replace(self.opts, ratio=None, target_macs=target, target_params=None, target_latency=None)
        return allocate(self.groups, self.scores, opts, self.cost, self.count_of_factory)

    def _search(self, target: float):
        from .search import search_allocation

        c = self.ctx
        # measured on the validation data when there is some: the repair is fitted to the
        # calibration samples, so on them every repaired candidate looks better than it is
        data = c["val_data"] if c["val_data"] is not None else c["calib_data"]
        pool = self.pool(data, c["search_repair"])
        opts = replace(self.opts, target_macs=target)

        def finish(counts):
            return give_back(self.groups, self.scores, counts, opts, self.fraction, target)

        at_target = replace(opts, ratio=None, target_params=None, target_latency=None)
        start = allocate(self.groups, self.scores, replace(at_target, global_ranking=True), self.cost,
                         self.count_of_factory)[0]
        counts, how = search_allocation(self.groups, self.cost, self.count_of_factory, target, pool.measure,
                                        candidates=c["search_candidates"], seed=c["seed"], round_to=opts.round_to,
                                        min_keep=opts.min_keep, max_ratio=opts.max_ratio, finish=finish,
                                        starts=[start] + self._kind_starts(replace(at_target, global_ranking=False)))
        self.search_history = how.pop("history")
        how.update(search_repaired=pool.repaired, search_workers=pool.describe(),
                   search_data="validation" if c["val_data"] is not None else "calibration")
        return counts, how

    def _kind_starts(self, opts) -> list[dict]:
        """One start per kind of group (``depthwise-coupled``, ``conv+residual``,
        ``attention-heads``, …) that can meet the target alone: only that kind's groups cut,
        uniformly. Kinds are structural classes whose damage differs systematically (a
        residual stream's channels feed every block after it), and a search that perturbs
        pressures of every group rarely drives a whole class to zero on its own."""
        kinds = sorted({g.kind for g in self.groups})
        if len(kinds) < 2:
            return []
        out = []
        for kind in kinds:
            members = [g for g in self.groups if g.kind == kind]
            try:
                counts, _ = allocate(members, self.scores, opts, self.cost, self.count_of_factory)
            except BadArgumentError:  # this kind alone cannot reach the target
                continue
            out.append({**{g.id: g.size for g in self.groups}, **counts})
        return out

    def _sensitivity(self, target: float):
        from .sensitivity import DEFAULT_RATIOS, sensitivity
        from .sensitivity_alloc import allocate_from_sensitivity

        c, o = self.ctx, self.opts
        if self._sens is None:
            self._sens = sensitivity(
                c["reference"], c["calibration"], criterion=c["criterion"], ratios=c["sensitivity_ratios"] or
                DEFAULT_RATIOS, metric=c["metric"], labels=c["labels"], batch_size=c["batch_size"],
                max_samples=c["max_samples"], input_shapes=c["input_shapes"], jobs=c["jobs"],
                device="cpu" if c["device"] == "auto" else c["device"], progress=c["progress"],
                reduction=c["reduction"], normalize=c["normalize"], loss=c["loss"],
                fallback_criterion=c["fallback_criterion"], prune_norm_spaces=c["prune_norm_spaces"],
                image_options=c["image_options"], folds=c["folds"], ray=c["ray"], head_mode=c["head_mode"])
            self.curves = sensitivity_curves(self._sens, c["metric"])
        sens = self._sens
        details: dict = {}
        counts = allocate_from_sensitivity(sens, target, analysis=self.analysis, input_shapes=c["input_shapes"],
                                           round_to=o.round_to, min_keep=o.min_keep, max_ratio=o.max_ratio,
                                           details=details)
        counts = {g.id: counts.get(g.id, g.size) for g in self.groups}
        how = {"strategy": "sensitivity+target-macs", "target_macs": target,
               "sensitivity_ratios": [p["ratio"] for p in sens["groups"][0]["points"]] if sens["groups"] else [],
               "predicted_drop": details.get("predicted_drop")}
        if c["folds"] > 1:
            how["sensitivity_folds"] = c["folds"]
        return counts, how


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


__all__ = ["Strategy", "sensitivity_curves"]
