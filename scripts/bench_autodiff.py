"""Forward+backward vs forward time of the generated backward graph (ONNX Runtime, CPU).

For each model: batch 8, L = sum(R * output), gradients at the input of every Conv/Gemm;
one session runs the plain model, one the model with the backward graph (both
ORT_ENABLE_ALL); timed interleaved, medians reported with their ratio (target <= 3.5x).

    python scripts/bench_autodiff.py                  # fixtures (+ /work/shared/hooks models if present)
    python scripts/bench_autodiff.py --synthetic      # also ImageNet-size ResNet-50 / MobileNetV2 (random weights)
    python scripts/bench_autodiff.py --profile        # per-op-type times of the fwd+bwd run
    python scripts/bench_autodiff.py --depthwise      # depthwise 3x3 input gradient: ConvTranspose vs flipped Conv
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchtime import timed  # noqa: E402
from onnxprune.calibration.autodiff import build_backward  # noqa: E402
from onnxprune.runtime import random_inputs, runnable_bytes  # noqa: E402
from onnxprune.shapes import infer_shapes, with_input_shapes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = [ROOT / "models" / "mobilenetv2.onnx", ROOT / "models" / "resnet_bottleneck.onnx"]
HOOKS = [Path("/work/shared/hooks/mobilenetv2.onnx"), Path("/work/shared/hooks/resnet50.onnx")]


def session(model, profile: str | None = None, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return ort.InferenceSession(runnable_bytes(model), so, providers=["CPUExecutionProvider"])


def with_gradients(model: onnx.ModelProto, feeds: dict):
    consts = {t.name for t in model.graph.initializer} | {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    wrt = list(dict.fromkeys(n.input[0] for n in model.graph.node
                             if n.op_type in ("Conv", "Gemm") and n.input[0] not in consts))
    shapes = infer_shapes(with_input_shapes(model, {k: list(v.shape) for k, v in feeds.items()}))
    shapes = {k: v for k, v in shapes.items() if v and all(isinstance(d, int) for d in v)}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    rng = np.random.default_rng(0)
    seeds = {}
    for out in m.graph.output:
        r = rng.standard_normal(shapes[out.name]).astype(np.float32)
        m.graph.initializer.append(numpy_helper.from_array(r, f"bench_seed_{len(seeds)}"))
        seeds[out.name] = f"bench_seed_{len(seeds)}"
    t = time.perf_counter()
    res = build_backward(m, wrt, seeds, shapes)
    return res, wrt, time.perf_counter() - t


def bench(name: str, model: onnx.ModelProto, batch: int, repeats: int, profile: bool, threads: int) -> dict:
    feeds = random_inputs(model, batch=batch, seed=0)
    res, wrt, build_s = with_gradients(model, feeds)
    fwd = session(model, threads=threads)
    both = session(res.model, threads=threads)
    runs = {"forward": lambda: fwd.run(None, feeds), "forward+backward": lambda: both.run(None, feeds)}
    med = timed(runs, repeats)
    out = {"model": name, "batch": batch, "wrt": len(wrt), "unavailable": len(res.unavailable),
           "forward_ms": med["forward"] * 1e3, "fwd_bwd_ms": med["forward+backward"] * 1e3,
           "ratio": med["forward+backward"] / med["forward"], "build_s": build_s}
    if profile:
        out["profile"] = op_profile(res.model, feeds, threads)
    return out


def op_profile(model, feeds, threads: int, top: int = 12) -> list:
    sess = session(model, profile="/tmp/bench_autodiff", threads=threads)
    for _ in range(3):
        sess.run(None, feeds)
    path = sess.end_profiling()
    per_op: dict = collections.Counter()
    for ev in json.load(open(path)):
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            per_op[ev["args"]["op_name"] + (" (bw)" if ev["name"].startswith("bw") else "")] += ev["dur"] / 3e3
    os.remove(path)
    return [(k, round(v, 2)) for k, v in per_op.most_common(top)]


# ---- ImageNet-size synthetic models (random weights, BN folded) ------------------------------


class _Net:
    def __init__(self):
        self.nodes, self.inits, self.n, self.rng = [], [], 0, np.random.default_rng(0)

    def conv(self, x, cin, cout, k, s=1, group=1, act="Relu"):
        self.n += 1
        w = (self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (cin // group * k * k)))
        self.inits += [numpy_helper.from_array(w.astype(np.float32), f"w{self.n}"),
                       numpy_helper.from_array(np.zeros(cout, np.float32), f"b{self.n}")]
        y = f"c{self.n}"
        self.nodes.append(helper.make_node("Conv", [x, f"w{self.n}", f"b{self.n}"], [y], kernel_shape=[k, k],
                                           strides=[s, s], pads=[k // 2] * 4, group=group))
        if act == "Relu":
            self.nodes.append(helper.make_node("Relu", [y], [y + "r"]))
            return y + "r"
        if act == "Relu6":
            self.nodes.append(helper.make_node("Clip", [y, "zero", "six"], [y + "r"]))
            return y + "r"
        return y

    def add(self, a, b, relu=False):
        self.n += 1
        y = f"a{self.n}"
        self.nodes.append(helper.make_node("Add", [a, b], [y]))
        if relu:
            self.nodes.append(helper.make_node("Relu", [y], [y + "r"]))
            return y + "r"
        return y

    def head(self, x, c, classes=1000):
        self.nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
                       helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["output"], transB=1)]
        self.inits += [numpy_helper.from_array((self.rng.standard_normal((classes, c)) * 0.01).astype(np.float32), "fc_w"),
                       numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b")]

    def model(self, name):
        self.inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                       numpy_helper.from_array(np.array(6.0, np.float32), "six")]
        g = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 3, 224, 224])],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", 1000])], self.inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def resnet50() -> onnx.ModelProto:
    net = _Net()
    x = net.conv("input", 3, 64, 7, 2)
    net.nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool", 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            s = stride if i == 0 else 1
            y = net.conv(x, cin, width, 1)
            y = net.conv(y, width, width, 3, s)
            y = net.conv(y, width, width * 4, 1, act=None)
            short = net.conv(x, cin, width * 4, 1, s, act=None) if i == 0 else x
            x, cin = net.add(y, short, relu=True), width * 4
    net.head(x, cin)
    return net.model("resnet50")


def mobilenetv2() -> onnx.ModelProto:
    net = _Net()
    x, cin = net.conv("input", 3, 32, 3, 2, act="Relu6"), 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            hidden = cin * t
            y = net.conv(x, cin, hidden, 1, act="Relu6") if t != 1 else x
            y = net.conv(y, hidden, hidden, 3, s if i == 0 else 1, group=hidden, act="Relu6")
            y = net.conv(y, hidden, c, 1, act=None)
            x, cin = (net.add(y, x) if i > 0 else y), c
    x = net.conv(x, cin, 1280, 1, act="Relu6")
    net.head(x, 1280)
    return net.model("mobilenetv2")


def depthwise(batch: int, repeats: int, threads: int, c: int = 96, hw: int = 56) -> None:
    """Forward depthwise 3x3 conv vs its input gradient as ConvTranspose(group=C) and, for
    stride 1, as the Conv with the flipped kernel (what conv.py emits)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)

    def one(op, name, shape, weight, **attrs):
        g = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"], group=c, kernel_shape=[3, 3], **attrs)], name,
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "w")])
        return session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), threads=threads)

    for stride in (1, 2):
        x = rng.standard_normal((batch, c, hw, hw)).astype(np.float32)
        fwd = one("Conv", "fwd", list(x.shape), w, strides=[stride] * 2, pads=[1] * 4)
        g = fwd.run(None, {"x": x})[0]
        op = hw - ((g.shape[2] - 1) * stride - 2 + 3)
        cases = {"forward Conv": (fwd, x),
                 "ConvTranspose group=C": (one("ConvTranspose", "ct", list(g.shape), w, strides=[stride] * 2,
                                               pads=[1] * 4, output_padding=[op] * 2), g)}
        if stride == 1:
            cases["Conv, flipped kernel"] = (one("Conv", "flip", list(g.shape), np.ascontiguousarray(w[:, :, ::-1, ::-1]),
                                                 pads=[1] * 4), g)
        times = {k: [] for k in cases}
        for _ in range(repeats):
            for k, (sess, feed) in cases.items():
                t = time.perf_counter()
                sess.run(None, {"x": feed})
                times[k].append(time.perf_counter() - t)
        base = np.median(times["forward Conv"])
        print(f"depthwise 3x3 {batch}x{c}x{hw}x{hw} stride {stride}: " + ", ".join(
            f"{k} {np.median(v) * 1e3:.3f} ms ({np.median(v) / base:.1f}x)" for k, v in times.items()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT default)")
    ap.add_argument("--synthetic", action="store_true", help="also ImageNet-size ResNet-50 and MobileNetV2")
    ap.add_argument("--profile", action="store_true", help="per-op-type time of the fwd+bwd run")
    ap.add_argument("--depthwise", action="store_true", help="only the depthwise input-gradient micro-benchmark")
    args = ap.parse_args(argv)
    if args.depthwise:
        for batch in (1, args.batch):
            depthwise(batch, max(args.repeats, 20), args.threads)
        return
    models = [(p.name, onnx.load(str(p))) for p in FIXTURES + [h for h in HOOKS if h.exists()]]
    if args.synthetic:
        models += [("synthetic_resnet50", resnet50()), ("synthetic_mobilenetv2", mobilenetv2())]
    for name, model in models:
        r = bench(name, model, args.batch, args.repeats, args.profile, args.threads)
        print(f"{r['model']:28s} batch {r['batch']}  grads at {r['wrt']:3d} tensors ({r['unavailable']} unavailable)  "
              f"forward {r['forward_ms']:8.1f} ms  fwd+bwd {r['fwd_bwd_ms']:8.1f} ms  ratio {r['ratio']:.2f}x  "
              f"(backward graph built in {r['build_s']:.2f} s)", flush=True)
        for op, ms in r.get("profile", []):
            print(f"    {op:32s} {ms:8.2f} ms")


if __name__ == "__main__":
    main()
