#!/usr/bin/env python
"""Dead-channel oracle on models outside the fixture zoo (not run by CI).

For every .onnx in a folder (default /work/unseen, made by scripts/export_unseen_models.py)
this analyzes the model and runs the oracle of tests/oracle.py on a seeded random sample of
its prunable exact groups: zero the chosen channels' contribution, prune exactly them, and
compare outputs (relative tolerance 1e-4: these models are larger and deeper).

    python scripts/oracle_unseen.py [DIR] [--groups 6]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from onnxprune.analysis import AnalysisOptions, analyze  # noqa: E402
from onnxprune.runtime import random_inputs  # noqa: E402
from tests.oracle import check_group  # noqa: E402

TOKEN_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default="/work/unseen")
    ap.add_argument("--groups", type=int, default=6, help="groups sampled per model")
    ap.add_argument("--seq", type=int, default=16, help="sequence length for token inputs")
    args = ap.parse_args(argv)
    failures = 0
    for path in sorted(Path(args.folder).glob("*.onnx")):
        t0 = time.time()
        model = onnx.load(str(path))
        shapes = {i.name: [1, args.seq] for i in model.graph.input if i.name in TOKEN_INPUTS}
        analysis = analyze(model, AnalysisOptions(input_shapes=shapes))
        feeds = random_inputs(model, shapes, batch=1)
        for name in feeds:
            if name in ("input_ids", "token_type_ids"):
                feeds[name] = feeds[name] % 4
            elif name == "attention_mask":
                feeds[name][:] = 1
        groups = [g for g in analysis.prunable if not g.inexact]
        random.Random(0).shuffle(groups)
        ok = 0
        for g in groups[: args.groups]:
            try:
                check_group(analysis, g, feeds, rtol=1e-4)
                ok += 1
            except Exception as exc:  # report and go on to the next group
                failures += 1
                print(f"   FAIL group {g.id} {g.name} ({g.kind}): {str(exc)[:200]}")
        print(f"{path.name:45s} oracle ok {ok}/{min(len(groups), args.groups)}  {time.time() - t0:.1f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
