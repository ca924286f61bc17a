#!/usr/bin/env python3
"""Render an HTML report for a fixture and load it in headless Chromium.

Takes a screenshot and fails (exit 1) on any browser console message, uncaught
error or refused load (the page has no script and a strict Content-Security-Policy,
so any such message means something is wrong). Exit 2 when Chromium is missing.

    python scripts/check_html_render.py [--model models/resnet_basic.onnx] [--ratio 0.3]
        [--extras] [--out DIR] [--width 1200] [--height 1600] [--inject-error]

--extras adds synthetic validation / sensitivity / budget-curve data so every
section is drawn; --inject-error adds a script to prove the console check fires.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
# Console output, uncaught exceptions, CSP refusals, failed resource loads.
BAD = re.compile(r"CONSOLE|Uncaught|Refused to|Failed to load resource|net::ERR_", re.I)


def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env and os.path.exists(env):
        return env
    for c in CHROMIUM_CANDIDATES:
        if os.path.exists(c):
            return c
    return shutil.which("chromium") or shutil.which("chromium-browser")


def synthetic_extras(report: dict) -> dict:
    report = dict(report)
    report["validation"] = {
        "passed": True,
        "failures": [],
        "outputs": [{"name": "output", "max_abs_diff": 0.8125, "mean_abs_diff": 0.0913,
                     "cosine": 0.9871, "snr_db": 17.3}],
        "classifier": {"top1_agreement": 0.94, "top5_agreement": 0.995,
                       "accuracy_before": 0.712, "accuracy_after": 0.688},
        "latency": {"p50_before_ms": 4.21, "p50_after_ms": 1.73, "p90_before_ms": 4.9,
                    "p90_after_ms": 2.05, "ratio": 0.41},
    }
    report["sensitivity"] = [
        {"x": r, "y": 1 - 0.9 * r ** (2 + (i % 3)), "label": g}
        for i, g in enumerate(["layer1", "layer2", "layer3"]) for r in (0, 0.2, 0.4, 0.6, 0.8)]
    report["budget_curve"] = [{"x": t, "y": 0.5 + 0.5 * math.sqrt(t), "label": f"macs {t:.0%}"}
                              for t in (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0)]
    return report


def chromium_args(exe: str, profile: str) -> list[str]:
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}"]


def run_chromium(exe: str, page: Path, shot: Path, width: int, height: int, timeout: int = 90):
    """Screenshot run with console logging; returns (console problem lines, dumped DOM)."""
    with tempfile.TemporaryDirectory(prefix="onnxprune-chromium-") as profile:
        cmd = chromium_args(exe, profile) + ["--enable-logging=stderr", "--v=0",
                                            f"--window-size={width},{height}",
                                            f"--screenshot={shot}", page.as_uri()]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        lines = (p.stdout + "\n" + p.stderr).splitlines()
        bad = [ln for ln in lines if BAD.search(ln)]
        if p.returncode != 0:
            bad.append(f"chromium exited {p.returncode}: {p.stderr.strip()[-500:]}")
    with tempfile.TemporaryDirectory(prefix="onnxprune-chromium-") as profile:
        cmd = chromium_args(exe, profile) + ["--dump-dom", page.as_uri()]
        d = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return bad, d.stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "resnet_basic.onnx"))
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--extras", action="store_true", help="add synthetic validation and curves")
    ap.add_argument("--out", help="directory for page + screenshot (default: a new temp dir)")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=1600)
    ap.add_argument("--inject-error", action="store_true", help="add a script error (self-test)")
    a = ap.parse_args(argv)

    exe = find_chromium()
    if not exe:
        print("chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2

    import onnxprune
    from onnxprune.html import render_html

    report = onnxprune.prune(a.model, ratio=a.ratio).report
    if a.extras:
        report = synthetic_extras(report)
    command = f"onnxprune prune {a.model} -o pruned.onnx --ratio {a.ratio}"
    page_html = render_html(report, command=command, title=f"onnxprune report: {Path(a.model).name}")
    if a.inject_error:
        page_html = page_html.replace("</body>", "<script>throw new Error('injected');</script></body>")

    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="onnxprune-html-"))
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(a.model).stem + ("-extras" if a.extras else "")
    page = (out / f"{stem}.html").resolve()
    shot = (out / f"{stem}-{a.width}x{a.height}.png").resolve()
    page.write_text(page_html, encoding="utf-8")
    if shot.exists():
        shot.unlink()

    bad, dom = run_chromium(exe, page, shot, a.width, a.height)
    problems = list(bad)
    if not shot.exists() or shot.stat().st_size < 5000:
        problems.append(f"no usable screenshot at {shot}")
    for marker in ('id="summary"', 'id="groups"', "<svg"):
        if marker not in dom:
            problems.append(f"rendered DOM lacks {marker}")
    print(f"page:       {page}")
    print(f"screenshot: {shot} ({shot.stat().st_size if shot.exists() else 0} bytes)")
    if problems:
        print("FAIL:", file=sys.stderr)
        for ln in problems:
            print("  " + ln, file=sys.stderr)
        return 1
    print("OK: no console errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
