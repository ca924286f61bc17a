#!/usr/bin/env python
"""Peak memory and time of pruning a model past the 2 GB protobuf limit (not run by CI).

Builds a synthetic MatMul/Relu chain whose weights (random sparse values, external data)
add up to ``--gb`` gigabytes, prunes it with the CLI as a whole process and prints peak
RSS next to the model size (the aim: memory near the model size, not a multiple of it).

    python scripts/bench_large_model.py --gb 3
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper


def build(folder: Path, gb: float, width: int) -> Path:
    layer_bytes = width * width * 4
    layers = max(2, int(round(gb * 2**30 / layer_bytes)))
    data_name = "big.onnx.data"
    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "x"
    offset = 0
    with open(folder / data_name, "wb") as data:
        for i in range(layers):
            w = np.zeros((width, width), np.float32)
            w[rng.integers(0, width, 4096), rng.integers(0, width, 4096)] = rng.standard_normal(4096)
            data.write(w.tobytes())
            ref = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[width, width])
            ref.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(layer_bytes))):
                e = ref.external_data.add()
                e.key, e.value = k, v
            offset += layer_bytes
            inits.append(ref)
            y = f"h{i}"
            nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [y + "_mm"]))
            nodes.append(helper.make_node("Relu", [y + "_mm"], [y]))
            x = y
    g = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", width])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = folder / "big.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=3.0)
    ap.add_argument("--width", type=int, default=16384)
    ap.add_argument("--ratio", type=float, default=0.5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir="/work" if os.path.isdir("/work") else None) as tmp:
        folder = Path(tmp)
        path = build(folder, args.gb, args.width)
        size = path.stat().st_size + (folder / "big.onnx.data").stat().st_size
        out = folder / "out" / "small.onnx"
        out.parent.mkdir()
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "onnxprune", "prune", str(path), "-o", str(out),
                               "--ratio", str(args.ratio)], capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(proc.stdout.strip() or proc.stderr.strip())
        written = sum(p.stat().st_size for p in out.parent.iterdir())
        print(f"model {size / 2**30:.2f} GiB, pruned {written / 2**30:.2f} GiB, exit {proc.returncode}, "
              f"{seconds:.1f} s, peak RSS {peak / 2**30:.2f} GiB = {peak / size:.2f} x model size")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
