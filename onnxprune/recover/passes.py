"""Calibration passes that do not start over: each model keeps, for every batch, the
*frontier* of what earlier passes computed (the tensors later nodes or later jobs still
read), and the next pass runs only the nodes between that frontier and the tensors it
needs. Over all waves each model is then run about once, instead of once per wave.

Sound for the pruned model because a wave only reads tensors that no pending job can
change: every node a pass computes is final. When the frontier would not fit the memory
budget the model is simply run from its graph inputs for that pass."""

from __future__ import annotations

from .graphs import GraphIndex, exposing


def quiet_session(model, device: str = "cpu"):
    """An ONNX Runtime session like :func:`onnxprune.runtime.session` whose idle threads
    sleep instead of spinning: the repair alternates ORT runs with numpy (BLAS) work, and
    spinning ORT threads slow the Gram products about tenfold on a few cores."""
    from .. import runtime

    ort = runtime._ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(runtime.runnable_bytes(model), so, providers=runtime.providers(device))


def calibration_batches(dataset, max_samples: int | None) -> list:
    """[(first sample index, feeds)], at most ``max_samples`` samples."""
    out, seen = [], 0
    for feeds in dataset.batches:
        n = next(iter(feeds.values())).shape[0]
        if max_samples is not None and seen + n > max_samples:
            n = max_samples - seen
            if n <= 0:
                break
            feeds = {k: v[:n] for k, v in feeds.items()}
        out.append((seen, feeds))
        seen += n
    return out


class StreamedModel:
    """One model (dense or pruned) run pass after pass over the same batches."""

    def __init__(self, budget_bytes: int, device: str):
        self.budget, self.device = budget_bytes, device
        self.computed: set[str] = set()
        self.cache: dict[str, list] = {}  # frontier tensor -> value per batch

    def cached_bytes(self) -> int:
        return sum(a.nbytes for vals in self.cache.values() for a in vals if a is not None)

    def prepare(self, model, index: GraphIndex, tensors: list[str], future: set[str]) -> None:
        """Plan a pass that yields ``tensors``; ``future`` are tensors later passes need."""
        tensors = list(dict.fromkeys(tensors))
        self.tensors = tensors
        inputs = set(index.inputs)
        missing = [t for t in tensors if t not in self.cache and t not in inputs]
        new = self._upstream(index, missing)
        computed = self.computed | new
        readers_out = {t for n in index.node.values() if n.name not in computed for t in n.input}
        frontier = [o for name in new for o in index.node[name].output
                    if o and (o in readers_out or o in future) and o not in inputs]
        self.keep = {t for t in self.cache if t in readers_out or t in future}
        self.store = [t for t in frontier if t not in self.keep]
        fetch = list(dict.fromkeys(missing + self.store))
        self.fetch = fetch
        self.fed = sorted({i for name in new for i in index.node[name].input if i in self.cache})
        self.graph_inputs = sorted({i for name in new for i in index.node[name].input if i in inputs})
        self.sess = None
        if fetch:
            dtypes = {t: self.cache[t][0].dtype for t in self.fed}
            self.sess = quiet_session(exposing(model, index, fetch, new, dtypes), device=self.device)
        self.computed = computed
        self.caching = True
        self._new = {t: [] for t in self.store}

    def _upstream(self, index: GraphIndex, missing: list[str]) -> set[str]:
        """Nodes between the cached frontier (or graph inputs) and ``missing``."""
        return index.ancestors(missing, stop=self.cache)

    def run(self, i: int, feeds: dict, n_batches: int) -> dict:
        """The pass's tensors for batch ``i``."""
        values = {}
        if self.sess is not None:
            run_feeds = {k: feeds[k] for k in self.graph_inputs}
            run_feeds.update({t: self.cache[t][i] for t in self.fed})
            values = dict(zip(self.fetch, self.sess.run(self.fetch, run_feeds)))
        if self.caching and self.store:
            if i == 0:
                est = sum(values[t].nbytes for t in self.store) * n_batches + self.cached_bytes()
                if est > self.budget:  # too big to hold: next passes start from the inputs
                    self.caching = False
            if self.caching:
                for t in self.store:
                    self._new[t].append(values[t])
        out = {t: (feeds[t] if t in feeds and t not in self.cache else
                   values[t] if t in values else self.cache[t][i]) for t in self.tensors}
        return out

    def finish(self) -> None:
        """Make this pass's frontier the cache of the next one."""
        if not self.caching:
            self.cache, self.computed = {}, set()
            return
        self.cache = {t: v for t, v in self.cache.items() if t in self.keep}
        self.cache.update(self._new)
        self._new = {}
