"""The collection engine: run the model in ONNX Runtime on calibration batches with the
statistics the criteria need appended as reductions (and, for gradient criteria, the
generated backward graph with a loss head), and accumulate them on the host.

Sessions and runs, chosen for the cost of the whole pass (building the graphs and
sessions, and the first runs, weigh as much as the runs themselves over a few batches):

- A statistics graph does not depend on the batch shape: one session serves every batch,
  a short last one included.
- A gradient graph is built for one input shape (its backward nodes hold shape
  constants). Where every read tensor and output has the batch as its leading axis, every
  run takes the same number of rows: a short batch is padded by repeating its samples
  (each sample's outputs, loss and gradients depend on that sample only) and the padding
  rows are dropped, so one session serves every batch. On CPU those runs are chunks of
  the batch holding at most :data:`GRADIENT_RUN_BYTES` of forward activations: a backward
  graph keeps every activation alive, so its memory grows with the rows per run, and the
  first run pages all of it in (measured on MobileNetV2 at batch 16: 1.2 GB, the first run
  twice as slow as the next); chunks of 4 cost no more per sample and page in a quarter.
  Elsewhere (rows that are not samples) each batch shape gets its own session.
- Sessions are created without ORT's memory pattern (planned after the first run, its
  block is fresh memory the second run pages in again) and without spinning threads.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..errors import BadArgumentError
from ..model import default_opset
from ..progress import Progress
from ..shapes import infer_shapes, with_input_shapes
from .loss import LABELS_INPUT, add_loss_heads
from .readpoints import ReadPoint, find_read_points
from .stats import STATISTICS, PointStats, ReductionBuilder, moments_for

READ_SUFFIX = "::onnxprune_read"
OWN_PASSES = ("gram",)  # needs met by the criterion itself from the calibration data (obs)
NONNEG_OPS = ("Relu", "Sigmoid", "Softplus", "Softmax")
GRADIENT_RUN_BYTES = 256 << 20  # forward activations per gradient run on CPU


@dataclass
class Calibration:
    """Streamed statistics of every read point, plus what could not be measured."""

    points: dict[str, ReadPoint]
    stats: dict[str, PointStats]
    statistics: tuple
    samples: int = 0
    synthetic: bool = False
    gradients: bool = False
    unavailable: dict = field(default_factory=dict)  # read point key -> why it has no gradient
    loss: list = field(default_factory=list)
    device: str = "cpu"
    dataset: object = None  # the calibration data, for criteria that make their own passes (obs)
    cache: dict = field(default_factory=dict)  # results such criteria compute once for every group

    def to_dict(self) -> dict:
        return {"samples": self.samples, "synthetic": self.synthetic, "read_points": len(self.points),
                "statistics": list(self.statistics), "gradients": self.gradients, "loss": list(self.loss),
                "no_gradient": dict(list(self.unavailable.items())[:20]), "device": self.device}


@dataclass
class _Layout:
    """How one read point is measured: per-sample moments (``per_sample``) with ``size``
    elements per sample and position (None: read from a Shape output), or reductions over
    every other axis."""

    rank: int
    per_sample: bool
    size: float | None = None
    nonneg: bool = False


def collect(analysis, groups, dataset, statistics, *, loss: str = "auto", device: str = "auto",
            progress: bool | None = None) -> Calibration:
    """Run ``dataset`` through the model and reduce ``statistics`` (names from
    :data:`~onnxprune.calibration.stats.STATISTICS`) at every read point of ``groups``."""
    unknown = [s for s in statistics if s not in STATISTICS + OWN_PASSES]
    if unknown:
        raise BadArgumentError(f"unknown statistic '{unknown[0]}'")
    statistics = tuple(s for s in statistics if s not in OWN_PASSES)
    points = find_read_points(analysis, groups)
    gradients = "ag" in statistics
    stats = {k: PointStats(rp.length) for k, rp in points.items()}
    calib = Calibration(points, stats, tuple(statistics), synthetic=dataset.synthetic, gradients=gradients)
    calib.device = _device_name(device)
    calib.dataset = dataset
    if not statistics:  # only criteria that make their own passes
        calib.samples = dataset.samples
        return calib
    layouts: dict = {}
    labels = dataset.labels is not None and gradients
    cache: dict = {}
    rows_per_run = None  # gradients, rows being samples: every run takes this many
    bar = Progress(len(dataset.batches), "calibrating batch", progress)
    start = 0
    for feeds in dataset.batches:
        n = next(iter(feeds.values())).shape[0]
        if not layouts:
            layouts = _layouts(analysis, points, feeds)
            if gradients and _paddable(analysis, points, layouts, feeds):
                rows_per_run = _rows_per_run(analysis, n, calib.device)
        batch_labels = np.asarray(dataset.labels[start:start + n], dtype=np.int64) if labels else None
        for run_feeds, rows, real in _runs(feeds, n, rows_per_run):
            key = tuple((k, v.shape) for k, v in sorted(run_feeds.items())) if gradients else None
            if key not in cache:  # a statistics graph runs any batch shape; a gradient graph one
                cache[key] = _build_session(analysis, points, layouts, run_feeds, statistics, loss, labels, device,
                                            calib)
            sess, fetch, inputs = cache[key]
            if labels and LABELS_INPUT in inputs:
                run_feeds = {**run_feeds, LABELS_INPUT: batch_labels[rows]}
            values = sess.run([f[2] for f in fetch], run_feeds)
            _accumulate(stats, layouts, statistics, fetch, values, real)
        start += n
        bar.step()
    bar.close()
    calib.samples = start
    if calib.synthetic and statistics:
        warnings.warn("calibrating on synthetic random inputs: data-aware criteria then rank channels by how "
                      "they respond to noise", RuntimeWarning, stacklevel=2)
    return calib


def _runs(feeds, n: int, size: int | None):
    """(feeds, rows of the batch, real rows) of each run: the batch whole (``size`` None),
    else chunks of ``size`` rows, the last one padded with repeats of its own samples (each
    sample's outputs, loss and gradients depend on that sample only; the padding rows are
    dropped)."""
    if size is None or size == n:
        yield feeds, slice(None), n
        return
    for lo in range(0, n, size):
        hi = min(lo + size, n)
        rows = slice(lo, hi) if hi - lo == size else lo + np.arange(size) % (hi - lo)
        yield {k: v[rows] for k, v in feeds.items()}, rows, hi - lo


def _rows_per_run(analysis, batch: int, device: str) -> int:
    """Samples per gradient run on CPU: the batch, in equal chunks each holding at most
    :data:`GRADIENT_RUN_BYTES` of forward activations (a backward graph keeps them all
    alive). Fewer rows per run cost no more per sample there, and the memory each run
    pages in is bounded (see the module docstring)."""
    if device != "cpu":
        return batch
    per_sample = _activation_bytes_per_sample(analysis)
    if not per_sample:
        return batch
    cap = max(1, GRADIENT_RUN_BYTES // per_sample)
    runs = -(-batch // cap)
    return -(-batch // runs)


def _activation_bytes_per_sample(analysis) -> int:
    """Bytes per sample of the tensors whose leading dim is the batch and others known."""
    batch = _batch_dim(analysis)
    if batch is None:
        return 0
    total = 0
    for dims in analysis.ctx.shapes.values():
        if dims and len(dims) > 1 and dims[0] == batch and all(isinstance(d, int) for d in dims[1:]):
            total += 4 * int(np.prod(dims[1:]))
    return total


def _accumulate(stats, layouts, statistics, fetch, values, n: int) -> None:
    """Add one batch's outputs (``n`` real samples; rows past them are padding)."""
    moments: dict = {}
    shapes: dict = {}
    for (pkey, kind, _), value in zip(fetch, values):
        if kind == "shape":
            shapes[pkey] = value
        elif kind.startswith("m:"):
            moments.setdefault(pkey, {})[kind[2:]] = value.reshape(value.shape[0], -1)[:n]
        else:
            stats[pkey].add(kind, value)
    for pkey, shape in shapes.items():
        if not layouts[pkey].per_sample:
            st = stats[pkey]
            st.count += float(np.prod(shape)) / st.length
            st.samples += n
    for pkey, got in moments.items():
        lay = layouts[pkey]
        size = lay.size
        if size is None:
            shape = shapes[pkey]
            size = float(np.prod(shape)) / (float(shape[0]) * stats[pkey].length)
        stats[pkey].add_moments(statistics, got, size, lay.nonneg)


def _layouts(analysis, points, feeds) -> dict:
    """{read point key: _Layout}: per-sample moments wherever the read axis is not the
    leading one (a rank-2 tensor only when its leading axis is the batch: otherwise its
    rows are tokens, and the moments would be the whole tensor)."""
    shapes = analysis.ctx.shapes
    batch = _batch_dim(analysis)
    producers = {o: nd for nd in analysis.model.graph.node for o in nd.output}
    layouts = {}
    for key, rp in points.items():
        dims = shapes.get(rp.tensor) or []
        rank = len(dims)
        per_sample = rank >= 3 and rp.axis != 0
        if rank == 2 and rp.axis == 1 and batch is not None:
            per_sample = _lead(dims) == batch or (_lead(dims) is None and rp.tensor in _batch_major(analysis, feeds))
        size = None
        if per_sample:
            within = [d for a, d in enumerate(dims) if a not in (0, rp.axis)]
            if all(isinstance(d, int) for d in within):
                size = float(np.prod(within)) if within else 1.0
        layouts[key] = _Layout(rank, per_sample, size, _nonnegative(analysis, producers.get(rp.tensor)))
    return layouts


def _batch_dim(analysis):
    """The leading dim (symbol or int) shared by every graph input, else None."""
    g = analysis.model.graph
    init = {t.name for t in g.initializer}
    leads = {_lead(analysis.ctx.shapes.get(i.name)) for i in g.input if i.name not in init}
    return leads.pop() if len(leads) == 1 else None


def _paddable(analysis, points, layouts, feeds) -> bool:
    """Whether a short batch may be padded: every read point is measured per sample and
    every read tensor and graph output has the batch as its leading axis (by its symbol,
    or where inference lost it, by inferring shapes for an unusual batch size)."""
    shapes = analysis.ctx.shapes
    batch = _batch_dim(analysis)
    if batch is None or any(lay.rank and not lay.per_sample for lay in layouts.values()):
        return False
    tensors = {rp.tensor for key, rp in points.items() if layouts[key].rank}
    tensors |= {o.name for o in analysis.model.graph.output}
    return all(_lead(shapes.get(t)) == batch or t in _batch_major(analysis, feeds) for t in tensors)


def _batch_major(analysis, feeds) -> set:
    """Tensors whose leading dim is the batch, by inferring shapes for a batch size no
    other dim is likely to equal (cached on the analysis)."""
    cached = getattr(analysis, "_batch_major", None)
    if cached is None:
        probe, cached = 9973, set()
        if isinstance(_batch_dim(analysis), str):
            try:
                inferred = infer_shapes(with_input_shapes(analysis.model, {k: [probe] + list(v.shape[1:])
                                                                           for k, v in feeds.items()}))
                cached = {t for t, dims in inferred.items() if _lead(dims) == probe}
            except Exception:
                pass
        analysis._batch_major = cached
    return cached


def _lead(dims):
    return dims[0] if dims and dims[0] is not None else None


def _nonnegative(analysis, node) -> bool:
    """Whether ``node``'s output is ≥ 0 everywhere (ReLU-like, or a Clip whose lower bound is ≥ 0)."""
    if node is None:
        return False
    if node.op_type in NONNEG_OPS:
        return True
    if node.op_type != "Clip":
        return False
    if len(node.input) > 1 and node.input[1]:
        low = analysis.ctx.const(node.input[1])
        return low is not None and np.size(low) == 1 and float(np.asarray(low).reshape(-1)[0]) >= 0.0
    low = next((a.f for a in node.attribute if a.name == "min"), None)  # opset < 11
    return low is not None and low >= 0.0


def _device_name(device: str) -> str:
    from ..runtime import providers

    return "cuda" if providers(device)[0] == "CUDAExecutionProvider" else "cpu"


def _build_session(analysis, points, layouts, feeds, statistics, loss, labels, device, calib):
    """A session computing the statistics (for batches shaped like ``feeds`` when it has
    gradients); returns it with its fetch list [(read point key, what, output name)] and its
    input names. ``what``: a statistic reduced over every axis but the read axis (or per
    sample), ``m:<moment>`` per-sample moments, ``shape``."""
    from ..runtime import session

    model = _stats_model(analysis.model)
    graph = model.graph
    opset = default_opset(model)
    build = ReductionBuilder(graph, opset)
    grads: dict[str, str] = {}
    if "ag" in statistics:
        grads = _add_gradients(model, points, feeds, loss, labels, build, calib)
        graph = model.graph
        build.graph = graph
    fetch = []
    for key, rp in points.items():
        lay = layouts[key]
        if not lay.rank:
            continue
        et = _elem_type(analysis, rp.tensor)
        x = build.float32(rp.tensor, et)
        g = build.float32(grads[rp.tensor], et) if rp.tensor in grads else None
        wanted = [s for s in statistics if s != "ag" or g is not None]
        if not wanted:
            continue
        if lay.per_sample:
            if lay.size is None:
                fetch.append((key, "shape", build.node("Shape", [rp.tensor])))
            for kind in moments_for(wanted, lay.nonneg):
                fetch.append((key, "m:" + kind, build.moment(kind, x, lay.rank, rp.axis, g)))
        else:
            fetch.append((key, "shape", build.node("Shape", [rp.tensor])))
            for stat in wanted:
                fetch.append((key, stat, build.statistic(stat, x, lay.rank, rp.axis, g)))
    for _, _, out in fetch:
        graph.output.append(onnx.ValueInfoProto(name=out))
    sess = session(model, device=device, mem_pattern=False, spinning=False)
    return sess, fetch, {i.name for i in sess.get_inputs()}


def _stats_model(model: onnx.ModelProto) -> onnx.ModelProto:
    m = copy.deepcopy(model)
    del m.graph.value_info[:]
    return m


def _elem_type(analysis, name: str) -> int:
    types = getattr(analysis, "_elem_types", None)
    if types is None:
        types = {}
        g = analysis.model.graph
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            types[vi.name] = vi.type.tensor_type.elem_type
        try:
            from ..shapes import skeleton

            inferred = onnx.shape_inference.infer_shapes(skeleton(analysis.model), strict_mode=False)
            for vi in inferred.graph.value_info:
                types.setdefault(vi.name, vi.type.tensor_type.elem_type)
        except Exception:
            pass
        analysis._elem_types = types
    return types.get(name) or onnx.TensorProto.FLOAT
def _add_gradients(model, points, feeds, loss, labels, build, calib) -> dict:
    """Route every contracting read through an Identity, append the loss head and the
    backward graph; returns {read tensor: gradient output} for the reachable ones."""
    from .autodiff import build_backward

    graph = model.graph
    nodes_of: dict[str, set] = {}
    for rp in points.values():
        nodes_of.setdefault(rp.tensor, set()).update(rp.nodes)
    reads: dict[str, str] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if node.name in nodes_of.get(name, ()):
                reads.setdefault(name, name + READ_SUFFIX)
                node.input[i] = reads[name]
    # each Identity goes right after its tensor's producer: the graph stays sorted
    after: dict[str, list] = {}
    produced = {o for n in graph.node for o in n.output}
    for t, r in reads.items():
        after.setdefault(t if t in produced else "", []).append(onnx.helper.make_node("Identity", [t], [r], name=r))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(after.get("", []))
    for n in nodes:
        graph.node.append(n)
        for o in n.output:
            graph.node.extend(after.get(o, []))
    input_shapes = {k: list(v.shape) for k, v in feeds.items()}
    shapes = infer_shapes(with_input_shapes(model, input_shapes))
    seeds, described = add_loss_heads(model, shapes, build, loss, labels)
    calib.loss = described
    if not seeds:
        for key in points:
            calib.unavailable[key] = "the model has no float output to take a loss on"
        return {}
    if any(i.name == LABELS_INPUT for i in graph.input):
        input_shapes[LABELS_INPUT] = [next(iter(feeds.values())).shape[0]]
    shapes = infer_shapes(with_input_shapes(model, input_shapes))
    concrete = {k: v for k, v in shapes.items() if v is not None and all(isinstance(d, int) for d in v)}
    result = build_backward(model, list(reads.values()), seeds, concrete)
    model.CopyFrom(result.model)
    out = {}
    for key, rp in points.items():
        read = reads.get(rp.tensor)
        if read in result.grads:
            out[rp.tensor] = result.grads[read]
        else:
            calib.unavailable[key] = result.unavailable.get(read, "not reached by the loss")
    return out
