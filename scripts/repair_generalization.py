#!/usr/bin/env python
"""Where does the repair stop generalizing? MobileNetV2 pruned (obs, uniform over the
inverted-residual hidden groups) and repaired from N calibration crops of the 13
calibration photos, then measured three ways: on crops of the 8 evaluation photos, on new
crops of the calibration photos, and on the calibration crops themselves (top-1 agreement
with the dense model, mean KL, and the unrepaired model's agreement), followed by each
repaired layer's calibration error before/after. Numbers recorded in docs/benchmarks.md
(after the bench_repair sections).

    python scripts/repair_generalization.py [--calib 64] [--target 0.8] [--ridge 0.1]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bench_repair as br  # noqa: E402
from photos import CALIB_PHOTOS, EVAL_PHOTOS, crops, fetch  # noqa: E402

from onnxprune.data import load_data  # noqa: E402
from onnxprune.model import load_model  # noqa: E402
from onnxprune.recover import RecoverOptions, recover  # noqa: E402
from onnxprune.recover.select import DAMP  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/work/bench_models/mobilenetv2.onnx")
    ap.add_argument("--calib", type=int, default=64, help="calibration crops")
    ap.add_argument("--target", type=float, default=0.8, help="MACs fraction kept")
    ap.add_argument("--ridge", type=float, default=0.1)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    folder = fetch()
    calib = crops(folder, CALIB_PHOTOS, args.calib, seed=1)
    sets = (("evaluation photos", crops(folder, EVAL_PHOTOS, 200, seed=2)),
            ("new crops of the calibration photos", crops(folder, CALIB_PHOTOS, 200, seed=3)),
            ("the calibration crops", calib))
    dense = load_model(args.model)
    ds = load_data({dense.graph.input[0].name: calib}, dense, batch_size=16)
    pruned, targets, _ = br.prune(dense, "obs", args.target, ds, DAMP, ["depthwise-coupled"])
    model, rep = recover(dense, pruned, targets, ds, RecoverOptions(ridge=args.ridge), progress=False)
    for name, x in sets:
        ref, out, raw = br.logits(dense, x), br.logits(model, x), br.logits(pruned, x)
        print(f"{name}: agreement {(out.argmax(1) == ref.argmax(1)).mean():.3f}, KL {br.kl(ref, out):.3f} "
              f"(unrepaired {(raw.argmax(1) == ref.argmax(1)).mean():.3f})")
    for layer, r in rep["layers"].items():
        print(f"  {layer}: {r['choice']}, calibration error {r['error_before']:.3f} -> {r['error_after']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
