"""The collection engine: run the model in ONNX Runtime on calibration batches with the
statistics the criteria need appended as reductions (and, for gradient criteria, the
generated backward graph with a loss head), and accumulate them on the host."""

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
from .stats import STATISTICS, PointStats, ReductionBuilder

READ_SUFFIX = "::onnxprune_read"
OWN_PASSES = ("gram",)  # needs met by the criterion itself from the calibration data (obs)


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
    labels = dataset.labels is not None and gradients
    cache: dict = {}
    sess_inputs: dict = {}
    bar = Progress(len(dataset.batches), "calibrating batch", progress)
    start = 0
    for feeds in dataset.batches:
        n = next(iter(feeds.values())).shape[0]
        key = tuple((k, v.shape) for k, v in sorted(feeds.items()))
        if key not in cache:
            cache[key] = _build_session(analysis, points, feeds, statistics, loss, labels, device, calib)
            sess_inputs[key] = {i.name for i in cache[key][0].get_inputs()}
        sess, fetch = cache[key]
        run_feeds = dict(feeds)
        if labels and LABELS_INPUT in sess_inputs[key]:
            run_feeds[LABELS_INPUT] = np.asarray(dataset.labels[start:start + n], dtype=np.int64)
        values = sess.run([f[2] for f in fetch], run_feeds)
        for (pkey, stat, _), value in zip(fetch, values):
            if stat == "shape":
                stats[pkey].count += float(np.prod(value)) / stats[pkey].length
                stats[pkey].samples += n
            else:
                stats[pkey].add(stat, value)
        start += n
        bar.step()
    bar.close()
    calib.samples = start
    if calib.synthetic and statistics:
        warnings.warn("calibrating on synthetic random inputs: data-aware criteria then rank channels by how "
                      "they respond to noise", RuntimeWarning, stacklevel=2)
    return calib


def _device_name(device: str) -> str:
    from ..runtime import providers

    return "cuda" if providers(device)[0] == "CUDAExecutionProvider" else "cpu"


def _build_session(analysis, points, feeds, statistics, loss, labels, device, calib):
    """A session computing the statistics for batches shaped like ``feeds``; returns it with
    its fetch list [(read point key, statistic or 'shape', output name)]."""
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
    shapes = analysis.ctx.shapes
    fetch = []
    for key, rp in points.items():
        rank = len(shapes.get(rp.tensor) or [])
        if not rank:
            continue
        x = build.float32(rp.tensor, _elem_type(analysis, rp.tensor))
        fetch.append((key, "shape", build.node("Shape", [rp.tensor])))
        for stat in statistics:
            if stat == "ag":
                if rp.tensor not in grads:
                    continue
                g = build.float32(grads[rp.tensor], _elem_type(analysis, rp.tensor))
                fetch.append((key, stat, build.statistic(stat, x, rank, rp.axis, g)))
            else:
                fetch.append((key, stat, build.statistic(stat, x, rank, rp.axis)))
    for _, _, out in fetch:
        graph.output.append(onnx.ValueInfoProto(name=out))
    return session(model, device=device), fetch


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
