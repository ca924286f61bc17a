#!/usr/bin/env python
"""Evaluate the third-party package onnx-ad as a gradient builder (docs/architecture.md,
"Why not onnx-ad"): for every fixture, build its reverse-mode model with the batch fixed
to 2 and shapes inferred, and time it against the plain forward pass in ORT.

    pip download onnx-ad==0.3.0 --no-deps -d /tmp/onnxad && unzip -o /tmp/onnxad/*.whl -d /tmp/onnxad/x
    python scripts/eval_onnx_ad.py /tmp/onnxad/x
"""

import glob
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else "/tmp/onnxad/x")
from onnx_ad import reverse  # noqa: E402

from onnxprune.runtime import random_inputs  # noqa: E402


def timed(sess, feeds, n=5):
    t = time.perf_counter()
    for _ in range(n):
        sess.run(None, feeds)
    return time.perf_counter() - t


for path in sorted(glob.glob("models/*.onnx")):
    m = onnx.load(path)
    for i in m.graph.input:
        for d in i.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.dim_value = 2
    m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    try:
        r = reverse(m, layout="onnx", outputs=[m.graph.output[0].name])
        so = ort.SessionOptions()
        so.log_severity_level = 4
        back = ort.InferenceSession(r.SerializeToString(), so, providers=["CPUExecutionProvider"])
        fwd = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feeds = random_inputs(m, batch=2)
        out = fwd.run(None, feeds)[0]
        seeded = dict(feeds, **{"adj_" + m.graph.output[0].name: np.ones(out.shape + (1,), np.float32)})
        seeded = {k: v for k, v in seeded.items() if k in {i.name for i in r.graph.input}}
        print(f"{path}: backward/forward {timed(back, seeded) / timed(fwd, feeds):.2f}x")
    except Exception as exc:
        print(f"{path}: FAIL {type(exc).__name__}: {str(exc)[:150]}")
