"""HTML report page: well-formed, self-contained, escaped, optional sections only when present."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import onnxprune
from onnxprune.html import render_html

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
FIXTURES = ["resnet_basic.onnx", "mobilenetv2.onnx", "if_model.onnx"]  # if_model has blocked groups

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
URL_ATTRS = {"src", "href", "xlink:href", "action", "formaction", "poster", "data", "srcset", "background"}


class StrictParser(HTMLParser):
    """Records nesting errors (html.parser itself is lenient) and every URL-valued attribute."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.doctype = None

    def handle_decl(self, decl):
        self.doctype = decl

    def _attrs(self, tag, attrs):
        d = dict(attrs)
        self.tags.append((tag, d))
        for k, v in attrs:
            if k in URL_ATTRS or k.startswith("on"):
                self.urls.append((tag, k, v or ""))
            if k == "style" and v and "url(" in v:
                self.urls.append((tag, k, v))

    def handle_starttag(self, tag, attrs):
        self._attrs(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self._attrs(tag, attrs)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'} at {self.getpos()}")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    def close(self):
        super().close()
        if self.stack:
            self.errors.append(f"unclosed at end: {self.stack}")


def parse(page: str) -> StrictParser:
    p = StrictParser()
    p.feed(page)
    p.close()
    return p


def sections(p: StrictParser) -> set[str]:
    return {a["id"] for t, a in p.tags if t == "section" and "id" in a}


@pytest.fixture(scope="module")
def reports():
    return {name: onnxprune.prune(str(MODELS / name), ratio=0.3).report for name in FIXTURES}


def hand_report(**extra) -> dict:
    groups = [
        {"id": 0, "name": "conv<script>alert('x')</script>&\"q\"", "kind": "conv<b>", "size_before": 16,
         "size_after": 8, "prunable": True, "exact": False, "blocked_by": [], "members": []},
        {"id": 7, "name": "blocked-one", "kind": "linear", "size_before": 10, "size_after": 10,
         "prunable": False, "exact": True, "blocked_by": ["reaches <graph> output 'y'", "second"],
         "members": [{"tensor": "w"}]},
    ]
    r = {"format": "onnxprune.report", "version": 1, "onnxprune_version": "0.1.0",
         "settings": {"criterion": "l2", "strategy": "uniform", "ratio": 0.5, "round_to": 16,
                      "weird<key>": "<img src=x onerror=alert(1)>"},
         "params_before": 1000, "params_after": 500, "params_ratio": 0.5,
         "macs_before": None, "macs_after": None, "macs_ratio": None,
         "macs_unknown_reason": "dynamic <dims>",
         "bytes_before": 4000, "bytes_after": 2000, "groups_total": 2, "groups_prunable": 1,
         "groups_pruned": 1, "seconds": 0.01, "groups": groups}
    r.update(extra)
    return r


VALIDATION = {
    "passed": False,
    "failures": ["cosine 0.91 < 0.99 on output <logits>"],
    "outputs": [{"name": "logits<1>", "max_abs_diff": 0.5, "mean_abs_diff": 0.01, "cosine": 0.91,
                 "snr_db": 12.5}],
    "classifier": {"top1_agreement": 0.9, "top5_agreement": 0.99, "accuracy_before": 0.7,
                   "accuracy_after": 0.65},
    # as onnxprune.validate returns it: nested op counts, run details, scalars
    "model": {"params_before": 10, "params_after": 5, "ops_before": {"Conv<x>": 3}, "ops_after": {"Conv<x>": 3}},
    "samples": 8, "synthetic_data": True, "metric": "agreement", "max_drop": 0.01, "atol": None,
    "latency": {"runs": 5, "batch": 8, "p50_before_ms": 4.0, "p50_after_ms": 2.0, "p90_before_ms": 5.0, "p90_after_ms": 2.5,
                "ratio": 0.5},
}
CURVE = [{"x": 0.1, "y": 0.99, "label": "r<0.1>"}, {"x": 0.3, "y": 0.95, "label": "b"},
         {"x": 0.5, "y": 0.80, "label": "c"}]


def check_page(page: str) -> StrictParser:
    assert page.startswith("<!DOCTYPE html>")
    p = parse(page)
    assert p.doctype and p.doctype.lower() == "doctype html"
    assert not p.errors, p.errors
    assert ("meta", {"charset": "utf-8"}) in p.tags
    # No external references at all: not in URL attributes, not anywhere in the page.
    bad = [u for u in p.urls if re.search(r"(https?:)?//", u[2]) or u[1].startswith("on")]
    assert not bad, bad
    assert not re.search(r"https?://|url\(|@import|<script|<link|<iframe|<img", page, re.I)
    return p


@pytest.mark.parametrize("name", FIXTURES)
def test_real_report_page(reports, name):
    report = reports[name]
    cmd = f"onnxprune prune models/{name} -o out.onnx --ratio 0.3"
    page = render_html(report, command=cmd)
    p = check_page(page)
    text = "".join(p.text)
    for g in report["groups"]:
        assert f'id="group-{g["id"]}"' in page
        assert g["name"] in text
    assert cmd in text
    assert {"summary", "channels", "groups", "command"} <= sections(p)
    assert not {"validation", "sensitivity", "budget-curve"} & sections(p)
    # one bar pair per pruned group
    pruned = [g for g in report["groups"] if g["size_after"] < g["size_before"]]
    assert page.count("<rect") == 2 * len(pruned)
    if any(g["blocked_by"] for g in report["groups"]):
        first = next(g["blocked_by"][0] for g in report["groups"] if g["blocked_by"])
        assert first in text


def test_escaping():
    r = hand_report()
    page = render_html(r, command="onnxprune prune 'a<b>.onnx' -o x.onnx && echo \"</pre>\"",
                       title="t</title><script>")
    p = check_page(page)
    text = "".join(p.text)
    assert "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;q&quot;" in page
    assert "conv<script>alert('x')</script>&\"q\"" in text  # round-trips as text
    assert "<img src=x onerror=alert(1)>" in text  # settings value shown as text, not markup
    assert "onnxprune prune 'a<b>.onnx' -o x.onnx && echo \"</pre>\"" in text
    assert "t</title><script>" in text
    assert "dynamic <dims>" in text  # MACs unknown reason
    assert "reaches <graph> output 'y'" in text and "inexact" in text
    assert {t for t, _ in p.tags} <= {"html", "head", "meta", "title", "style", "body", "main", "header",
                                      "h1", "h2", "h3", "p", "section", "div", "span", "dl", "dt", "dd",
                                      "svg", "g", "title", "text", "rect", "figure", "figcaption", "table",
                                      "thead", "tbody", "tr", "th", "td", "pre", "code", "details",
                                      "summary", "footer", "strong", "ul", "li", "line", "polyline",
                                      "circle"}


def test_optional_sections_only_when_present():
    base = render_html(hand_report())
    assert not {"validation", "sensitivity", "budget-curve"} & sections(parse(base))
    assert "Reproduce" in base and "not recorded" in base  # no command given

    page = render_html(hand_report(validation=VALIDATION))
    p = check_page(page)
    text = "".join(p.text)
    assert "validation" in sections(p) and not {"sensitivity", "budget-curve"} & sections(p)
    assert "FAILED" in text and "cosine 0.91 < 0.99 on output <logits>" in text
    assert 'class="verdict fail"' in page
    assert "logits<1>" in text and "SNR (dB)" in text and "12.5" in text
    assert "Top-1 agreement" in text and "0.9" in text
    assert "p50 (ms)" in text and "p90 (ms)" in text and "2× faster" in text
    assert "Ops: Conv<x>" in text and "synthetic random inputs" in text and "Samples" in text

    no_latency = dict(VALIDATION, latency=None, classifier=None, outputs=[])
    p = check_page(render_html(hand_report(validation=no_latency)))
    assert "validation" in sections(p) and "Latency" not in "".join(p.text)

    ok = copy.deepcopy(VALIDATION)
    ok.update(passed=True, failures=[])
    page = render_html(hand_report(validation=ok))
    assert 'class="verdict pass"' in page and "FAILED" not in page

    page = render_html(hand_report(sensitivity=CURVE, budget_curve=CURVE[:2]))
    p = check_page(page)
    assert {"sensitivity", "budget-curve"} <= sections(p) and "validation" not in sections(p)
    assert page.count("<polyline") == 2
    assert "r<0.1>" in "".join(p.text)


def test_curves_series_and_odd_values():
    series = [{"x": r, "y": 1 - r * k, "label": f"g{k}"} for k in (1, 2) for r in (0.0, 0.5, 1.0)]
    bad = [{"x": float("nan"), "y": 1}, {"x": 1, "y": float("inf")}, {"x": "a", "y": 2}, "junk"]
    page = render_html(hand_report(sensitivity=series, budget_curve=bad))
    assert {"sensitivity", "budget-curve"} <= sections(check_page(page))
    assert page.count("<polyline") == 2  # two series in sensitivity; nothing plottable in the budget curve
    assert "No plottable points" in page
    # dict form with axis labels
    page = render_html(hand_report(budget_curve={"points": CURVE, "x_label": "MACs kept", "y_label": "top-1"}))
    text = "".join(check_page(page).text)
    assert "MACs kept" in text and "top-1" in text


def test_no_pruned_groups_and_empty_report():
    r = hand_report()
    for g in r["groups"]:
        g["size_after"] = g["size_before"]
    page = render_html(r)
    check_page(page)
    assert "No group lost channels" in page and "<rect" not in page
    check_page(render_html({}))
    with pytest.raises(TypeError):
        render_html([])


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium")
def test_renders_in_headless_chromium(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_html_render.py"), "--extras",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    assert list(tmp_path.glob("*.png"))
