"""Conv weight-gradient formulations in ORT CPU, timed side by side against the forward conv.

Each case is one Conv of MobileNetV2 (ImageNet size, batch 16 by default): the forward conv
(weight an initializer) and, per formulation that applies (see
``onnxprune/calibration/autodiff/rules/conv_weight.py``), the graph computing dW from x and
g = dL/dy, as the backward builder emits it. Timed interleaved; medians, and each as a
ratio to the forward conv. ``*`` marks the formulation the rule picks.

    python scripts/bench_weight_grads.py                   # per-layer comparison
    python scripts/bench_weight_grads.py --step            # + whole training step of MobileNetV2
    python scripts/bench_weight_grads.py --batch 4 --repeats 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchtime import timed  # noqa: E402

from onnxprune.calibration.autodiff.graph import Builder  # noqa: E402
from onnxprune.calibration.autodiff.rules import conv_weight  # noqa: E402
from onnxprune.finetune.trainable import as_inputs  # noqa: E402

F32 = onnx.TensorProto.FLOAT

# name: (cin, cout, kernel, stride, group, spatial in)
CASES = {
    "stem 3->32 3x3 s2 @224": (3, 32, 3, 2, 1, 224),
    "pw 32->16 @112": (32, 16, 1, 1, 1, 112),
    "pw 16->96 @112": (16, 96, 1, 1, 1, 112),
    "pw 144->24 @56": (144, 24, 1, 1, 1, 56),
    "pw 192->32 @28": (192, 32, 1, 1, 1, 28),
    "pw 576->96 @14": (576, 96, 1, 1, 1, 14),
    "pw 960->160 @7": (960, 160, 1, 1, 1, 7),
    "pw 320->1280 @7": (320, 1280, 1, 1, 1, 7),
    "dw 32 s1 @112": (32, 32, 3, 1, 32, 112),
    "dw 96 s2 @112": (96, 96, 3, 2, 96, 112),
    "dw 144 s1 @56": (144, 144, 3, 1, 144, 56),
    "dw 144 s2 @56": (144, 144, 3, 2, 144, 56),
    "dw 192 s1 @28": (192, 192, 3, 1, 192, 28),
    "dw 384 s1 @14": (384, 384, 3, 1, 384, 14),
    "dw 576 s2 @14": (576, 576, 3, 2, 576, 14),
    "dw 960 s1 @7": (960, 960, 3, 1, 960, 7),
    "3x3 64->64 @56 (resnet)": (64, 64, 3, 1, 1, 56),
    "3x3 g2 64->64 @28": (64, 64, 3, 1, 2, 28),
}


def session(model, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # sessions timed in turn: no idle spinning
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info(k, F32, s) for k, s in inputs.items()],
                          [helper.make_tensor_value_info(o, F32, None) for o in outputs], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def layer(case, batch: int):
    cin, cout, k, s, group, hw = case
    p = k // 2
    xs = [batch, cin, hw, hw]
    ws = [cout, cin // group, k, k]
    ho = (hw + 2 * p - k) // s + 1
    ys = [batch, cout, ho, ho]
    geom = dict(strides=[s, s], dil=[1, 1], pb=[p, p], pe=[p, p])
    return xs, ws, ys, group, geom


def forward_model(xs, ws, group, geom, rng):
    w = numpy_helper.from_array(rng.standard_normal(ws).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=group, strides=geom["strides"],
                            pads=geom["pb"] + geom["pe"], kernel_shape=ws[2:])
    return _model([node], {"x": xs}, ["y"], [w])


def grad_model(method, xs, ws, ys, group, geom):
    m = _model([], {"x": xs, "g": ys}, [])
    b = Builder(m, {"x": xs, "g": ys}, 17, {"x": F32, "g": F32})
    out = conv_weight.weight_grad(b, "x", "g", xs, ws, ys, group, geom["strides"], geom["dil"], geom["pb"], geom["pe"],
                                  method=method)
    m.graph.node.extend(b.nodes)
    m.graph.initializer.extend(b.inits)
    m.graph.output.append(helper.make_tensor_value_info(out, F32, ws))
    return m


def applicable(method, xs, ws, ys, group, geom) -> bool:
    if method == "gemm":
        return group == 1 and all(k == 1 for k in ws[2:]) and not any(geom["pb"] + geom["pe"])
    if method == "matmul":
        return all(k == 1 for k in ws[2:]) and not any(geom["pb"] + geom["pe"])
    if method == "taps":
        return ws[1] == 1 and group > 1
    if method == "rows":
        return ws[1] == 1 and group > 1 and len(ws) == 4
    return True


def per_layer(batch: int, repeats: int, threads: int, only=None) -> None:
    rng = np.random.default_rng(0)
    for name, case in CASES.items():
        if only and only not in name:
            continue
        xs, ws, ys, group, geom = layer(case, batch)
        x = rng.standard_normal(xs).astype(np.float32)
        g = rng.standard_normal(ys).astype(np.float32)
        fwd = session(forward_model(xs, ws, group, geom, rng), threads)
        runs = {"forward": lambda fwd=fwd: fwd.run(None, {"x": x})}
        ref = None
        for method in conv_weight.METHODS:
            if not applicable(method, xs, ws, ys, group, geom):
                continue
            sess = session(grad_model(method, xs, ws, ys, group, geom), threads)
            got = sess.run(None, {"x": x, "g": g})[0]
            ref = got if ref is None else ref
            assert np.allclose(got, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max()), (name, method)
            runs[method] = lambda sess=sess: sess.run(None, {"x": x, "g": g})
        med = timed(runs, repeats)
        picked = conv_weight.pick(xs, ws, ys, group, geom["pb"], geom["pe"])
        base = med["forward"]
        cells = [f"forward {base * 1e3:7.2f} ms"]
        cells += [f"{k}{'*' if k == picked else ''} {v * 1e3:7.2f} ms ({v / base:4.1f}x)" for k, v in med.items()
                  if k != "forward"]
        print(f"{name:26s} " + "  ".join(cells), flush=True)


def _params_as_inputs(model: onnx.ModelProto, names: list[str]):
    """(copy of the model whose ``names`` initializers are graph inputs, their values)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m, as_inputs(m, names)


def step(batch: int, repeats: int, threads: int) -> None:
    """Forward vs forward + backward, timed interleaved, with the gradients of: every Conv/Gemm
    input (activations: what the importance criteria ask for); every Conv/Gemm weight and
    bias except the depthwise weights; all of them (a training step); and all of them with
    the parameters fed as graph inputs, as a finetuning loop runs it (ORT then neither
    prepacks the weights nor runs the forward convs in its blocked layout)."""
    from bench_autodiff import mobilenetv2

    from onnxprune.calibration.autodiff import build_backward
    from onnxprune.shapes import infer_shapes, with_input_shapes

    model = mobilenetv2()
    feeds = {"input": np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    shapes = infer_shapes(with_input_shapes(model, {"input": [batch, 3, 224, 224]}))
    shapes = {k: v for k, v in shapes.items() if v and all(isinstance(d, int) for d in v)}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    layers = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    depthwise = {n.input[1] for n in layers if n.op_type == "Conv" and shapes[n.input[1]][1] == 1}
    params = [i for n in layers for i in n.input[1:]]
    wrts = {"activations": list(dict.fromkeys(n.input[0] for n in layers if n.input[0] != "input")),
            "weights but depthwise": [p for p in params if p not in depthwise],
            "weights": params, "weights fed as inputs": params}
    r = np.random.default_rng(1).standard_normal((batch, 1000)).astype(np.float32)
    runs = {"forward": (session(model, threads), feeds)}
    for what, wrt in wrts.items():
        m, values = _params_as_inputs(model, params if what.endswith("inputs") else [])
        m.graph.initializer.append(numpy_helper.from_array(r, "seed"))
        res = build_backward(m, wrt, {"output": "seed"}, shapes)
        assert not res.unavailable, res.unavailable
        runs[what] = (session(res.model, threads), {**feeds, **values})
    med = timed({k: (lambda s=s, f=f: s.run(None, f)) for k, (s, f) in runs.items()}, repeats)
    base = med["forward"]
    print(f"MobileNetV2 224 batch {batch}: forward {base * 1e3:.1f} ms; forward + backward with the gradients of",
          flush=True)
    for k, wrt in wrts.items():
        print(f"    {len(wrt):3d} {k:24s} {med[k] * 1e3:8.1f} ms  ({med[k] / base:.2f}x)", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT default)")
    ap.add_argument("--only", help="cases whose name contains this")
    ap.add_argument("--step", action="store_true", help="also a whole MobileNetV2 training step")
    ap.add_argument("--no-layers", action="store_true")
    args = ap.parse_args(argv)
    if not args.no_layers:
        per_layer(args.batch, args.repeats, args.threads, args.only)
    if args.step:
        step(args.batch, max(3, args.repeats // 2), args.threads)


if __name__ == "__main__":
    main()
