"""Self-contained HTML page for a prune report.

:func:`render_html` turns the dict from :func:`onnxprune.report.build_report`
(``onnxprune.prune(...).report``) into one HTML5 document with no external
references: inline CSS, charts as inline SVG, no JavaScript. Every string that
comes from the report is escaped. Optional report keys (``validation``,
``sensitivity``, ``budget_curve``) get a section only when present.
"""

from __future__ import annotations

import json
import math
import re
from html import escape

from .fmt import human_count as _human
from .html_style import CSS

__all__ = ["render_html"]

_PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"]




# ---------------------------------------------------------------- formatting

def _e(x) -> str:
    """Escape anything (str() first) for text and attribute values."""
    return escape("" if x is None else str(x), quote=True)


def _isnum(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v) -> bool:
    return _isnum(v) and math.isfinite(v)


def _bytes(n) -> str:
    if not _isnum(n):
        return "?"
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"


def _pct(r, digits=1) -> str:
    return f"{100 * r:.{digits}f}%" if _finite(r) else "?"


def _fmt(v) -> str:
    """A metric value as short text (not escaped)."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3e}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return json.dumps(v, default=str, sort_keys=True)
    return str(v)


_LABELS = {"max_abs_diff": "Max |diff|", "mean_abs_diff": "Mean |diff|", "snr_db": "SNR (dB)",
           "cosine": "Cosine", "top1_agreement": "Top-1 agreement", "top5_agreement": "Top-5 agreement",
           "p50_ms": "p50 (ms)", "p90_ms": "p90 (ms)", "p95_ms": "p95 (ms)", "p99_ms": "p99 (ms)",
           "mean_ms": "Mean (ms)", "macs": "MACs", "params": "Parameters", "bytes": "Size (bytes)",
           "ops": "Ops", "mse": "MSE", "cosine_mean": "Cosine (mean)", "cosine_min": "Cosine (min)"}


def _label(key) -> str:
    if key in _LABELS:
        return _LABELS[key]
    s = str(key).replace("_", " ")
    return s[:1].upper() + s[1:]


def _ratio(before, after):
    if _finite(before) and _finite(after) and before:
        return after / before
    return None


# ---------------------------------------------------------------- summary

def _card(key: str, value: str, detail: str = "", title: str = "") -> str:
    t = f' title="{_e(title)}"' if title else ""
    d = f'<div class="d">{detail}</div>' if detail else ""
    return f'<div class="card"{t}><div class="k">{_e(key)}</div><div class="v">{value}</div>{d}</div>'


def _before_after_card(key, before, after, ratio, fmt, unknown_reason=None) -> str:
    if ratio is None:
        ratio = _ratio(before, after)
    value = f"{_e(fmt(before))} → {_e(fmt(after))}"
    if ratio is not None:
        detail = f'<span class="good">{_e(_pct(ratio))} kept</span> · −{_e(_pct(1 - ratio))}'
    elif unknown_reason:
        detail = f"unknown: {_e(unknown_reason)}"
    else:
        detail = ""
    title = f"{before} → {after}" if _isnum(before) or _isnum(after) else ""
    return _card(key, value, detail, title)


def _summary(report: dict) -> str:
    cards = [
        _before_after_card("Parameters", report.get("params_before"), report.get("params_after"),
                           report.get("params_ratio"), _human),
        _before_after_card("MACs", report.get("macs_before"), report.get("macs_after"),
                           report.get("macs_ratio"), _human, report.get("macs_unknown_reason")),
        _before_after_card("Model size", report.get("bytes_before"), report.get("bytes_after"),
                           None, _bytes),
    ]
    gp, gpr, gt = report.get("groups_pruned"), report.get("groups_prunable"), report.get("groups_total")
    cards.append(_card("Groups pruned", f"{_e(_fmt(gp))} / {_e(_fmt(gpr))} / {_e(_fmt(gt))}",
                       "pruned / prunable / total"))
    secs = report.get("seconds")
    cards.append(_card("Time", _e(f"{secs:.2f} s" if _finite(secs) else _fmt(secs)), "analysis + pruning"))
    out = ['<section id="summary"><h2>Summary</h2>', f'<div class="cards">{"".join(cards)}</div>']
    settings = report.get("settings")
    if isinstance(settings, dict) and settings:
        out.append("<h3>Settings</h3><dl class=\"settings\">")
        for k, v in settings.items():
            out.append(f"<dt>{_e(k)}</dt><dd>{_e(_fmt(v))}</dd>")
        out.append("</dl>")
    out.append("</section>")
    return "".join(out)


# ---------------------------------------------------------------- groups

def _groups(report: dict) -> list[dict]:
    gs = report.get("groups")
    return [g for g in gs if isinstance(g, dict)] if isinstance(gs, list) else []


def _is_pruned(g: dict) -> bool:
    b, a = g.get("size_before"), g.get("size_after")
    return _isnum(b) and _isnum(a) and a < b


def _short(name: str, limit: int = 36) -> str:
    """Keep the end of long names: node paths say the most at their tail."""
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def _bar_chart(groups: list[dict], cap: int = 300) -> str:
    rows = [g for g in groups if _is_pruned(g)]
    head = '<section id="channels"><h2>Channels kept per pruned group</h2>'
    if not rows:
        return head + '<p class="note">No group lost channels.</p></section>'
    shown = rows[:cap]
    # Name above its bar: stays legible when the figure is scaled down in a narrow window.
    W, bar_w, row_h, top = 540, 420, 34, 4
    H = top * 2 + row_h * len(shown)
    parts = [f'<svg class="bars" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
             f'role="img" aria-label="Kept and removed channels per pruned group">']
    for i, g in enumerate(shown):
        b, a = g["size_before"], g["size_after"]
        y = top + i * row_h
        kw = bar_w * a / b if b else 0
        name = f"#{g.get('id')} {g.get('name', '')}"
        tip = f"{name}: kept {a} of {b}, removed {b - a} ({_pct((b - a) / b) if b else '?'})"
        parts.append(f'<g><title>{_e(tip)}</title>'
                     f'<text x="0" y="{y + 11}" font-size="12" fill="#1f2328">{_e(_short(name, 80))}</text>'
                     f'<rect x="0" y="{y + 15}" width="{kw:.1f}" height="13" fill="#2f7d4f"/>'
                     f'<rect x="{kw:.1f}" y="{y + 15}" width="{bar_w - kw:.1f}" height="13" fill="#d9a0a0"/>'
                     f'<text x="{bar_w + 8}" y="{y + 26}" font-size="12" fill="#59636e">'
                     f'{_e(a)} / {_e(b)} ({_e(_pct(a / b if b else 0, 0))})</text></g>')
    parts.append("</svg>")
    more = (f'<figcaption>First {len(shown)} of {len(rows)} pruned groups; all are in the table below.'
            f'</figcaption>' if len(rows) > len(shown) else "")
    legend = ('<div class="legend"><span><span class="sw" style="background:#2f7d4f"></span>kept</span>'
              '<span><span class="sw" style="background:#d9a0a0"></span>removed</span>'
              '<span>numbers: kept / before (share kept)</span></div>')
    return head + legend + '<figure class="scroll">' + "".join(parts) + more + "</figure></section>"


def _status(g: dict) -> str:
    blocked = g.get("blocked_by") or []
    tags = []
    if _is_pruned(g):
        b, a = g["size_before"], g["size_after"]
        tags.append(f'<span class="tag t-pruned">pruned −{_e(b - a)}</span>')
    elif blocked or g.get("prunable") is False:
        tags.append('<span class="tag t-blocked">blocked</span>')
    else:
        tags.append('<span class="tag t-same">unchanged</span>')
    if g.get("exact") is False:
        tags.append('<span class="tag t-inexact" title="changes the model function (e.g. normalization '
                    'statistics)">inexact</span>')
    if blocked:
        first = blocked[0] if isinstance(blocked, list) else blocked
        extra = f" (+{len(blocked) - 1} more)" if isinstance(blocked, list) and len(blocked) > 1 else ""
        full = "; ".join(map(str, blocked)) if isinstance(blocked, list) else str(blocked)
        tags.append(f'<div class="reason" title="{_e(full)}">{_e(first)}{_e(extra)}</div>')
    return " ".join(tags)


def _group_table(groups: list[dict]) -> str:
    out = ['<section id="groups"><h2>All channel groups</h2>']
    if not groups:
        return out[0] + '<p class="note">The report lists no groups.</p></section>'
    out.append('<div class="scroll"><table><thead><tr><th class="num">ID</th><th>Name</th><th>Kind</th>'
               '<th class="num">Channels</th><th class="num">Members</th><th>Status</th></tr></thead><tbody>')
    for g in groups:
        b, a = g.get("size_before"), g.get("size_after")
        ch = f"{_e(_fmt(b))} → {_e(_fmt(a))}" if b != a else _e(_fmt(b))
        members = g.get("members")
        n_members = len(members) if isinstance(members, list) else members
        out.append(f'<tr id="group-{_e(g.get("id"))}"><td class="num">{_e(g.get("id"))}</td>'
                   f'<td class="name mono">{_e(g.get("name"))}</td><td>{_e(g.get("kind"))}</td>'
                   f'<td class="num">{ch}</td><td class="num">{_e(_fmt(n_members))}</td>'
                   f'<td>{_status(g)}</td></tr>')
    out.append("</tbody></table></div></section>")
    return "".join(out)


# ---------------------------------------------------------------- validation

_PAIR = re.compile(r"^(?P<pre>.*?)_?(?P<when>before|after)(?P<post>_.*)?$")


def _paired_table(d: dict) -> str:
    """Scalars as rows; keys ``X_before``/``X_after`` (``p50_before_ms``) side by side with the change."""
    pairs: dict[str, dict] = {}
    single: list[tuple[str, object]] = []
    for k, v in d.items():
        m = _PAIR.match(str(k))
        if m and (m["pre"] or m["post"]):
            metric = (m["pre"] + (m["post"] or "")).strip("_")
            pairs.setdefault(metric, {})[m["when"]] = v
        else:
            single.append((k, v))
    out = []
    if pairs:
        out.append('<div class="scroll"><table class="compact"><thead><tr><th>Metric</th><th class="num">Before</th>'
                   '<th class="num">After</th><th class="num">After / before</th></tr></thead><tbody>')
        rows = []
        for metric, ba in pairs.items():
            b, a = ba.get("before"), ba.get("after")
            if isinstance(b, dict) or isinstance(a, dict):  # e.g. op counts: one row per key
                b, a = b if isinstance(b, dict) else {}, a if isinstance(a, dict) else {}
                rows += [(f"{_label(metric)}: {k}", b.get(k), a.get(k)) for k in dict.fromkeys([*b, *a])]
            else:
                rows.append((_label(metric), b, a))
        for name, b, a in rows:
            r = _ratio(b, a)
            out.append(f'<tr><td>{_e(name)}</td><td class="num">{_e(_fmt(b))}</td>'
                       f'<td class="num">{_e(_fmt(a))}</td><td class="num">{_e(_fmt(r) if r is not None else "—")}'
                       f'</td></tr>')
        out.append("</tbody></table></div>")
    if single:
        out.append('<div class="scroll"><table class="compact"><tbody>')
        for k, v in single:
            out.append(f'<tr><th>{_e(_label(k))}</th><td class="num">{_e(_fmt(v))}</td></tr>')
        out.append("</tbody></table></div>")
    return "".join(out)


def _records_table(rows: list) -> str:
    """A list of dicts as a table; ``name`` first, other columns in first-seen order."""
    rows = [r for r in rows if isinstance(r, dict)]
    if not rows:
        return ""
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    if "name" in cols:
        cols.remove("name")
        cols.insert(0, "name")
    out = ['<div class="scroll"><table class="compact"><thead><tr>']
    for c in cols:
        cls = "" if c == "name" else ' class="num"'
        out.append(f"<th{cls}>{_e(_label(c))}</th>")
    out.append("</tr></thead><tbody>")
    for r in rows:
        out.append("<tr>")
        for c in cols:
            v = r.get(c)
            if c == "name" or not (_isnum(v) or v is None):
                out.append(f'<td class="name mono">{_e(_fmt(v))}</td>')
            else:
                out.append(f'<td class="num">{_e(_fmt(v))}</td>')
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _latency_svg(lat: dict) -> str:
    """Small grouped bars: each percentile before/after, in milliseconds."""
    rows = []
    for k, v in lat.items():
        m = re.match(r"^(.+?)_(before|after)_ms$", str(k))
        if m and _finite(v):
            rows.append((m[1], m[2], v))
    metrics = list(dict.fromkeys(r[0] for r in rows))
    if not metrics:
        return ""
    vals = {(m, w): v for m, w, v in rows}
    top = max(v for _, _, v in rows) or 1.0
    W, lw, bw, bh = 640, 70, 440, 16
    H = 8 + len(metrics) * (2 * bh + 12)
    parts = [f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
             f'class="chart" role="img" aria-label="Latency before and after">']
    y = 6
    for m in metrics:
        parts.append(f'<text x="{lw - 8}" y="{y + bh + 4}" text-anchor="end" font-size="12" fill="#1f2328">'
                     f'{_e(m)}</text>')
        for when, color in (("before", "#8c959f"), ("after", "#2563eb")):
            v = vals.get((m, when))
            if v is not None:
                w = bw * max(v, 0) / top
                parts.append(f'<rect x="{lw}" y="{y}" width="{w:.1f}" height="{bh - 2}" fill="{color}">'
                             f'<title>{_e(f"{m} {when}: {_fmt(v)} ms")}</title></rect>'
                             f'<text x="{lw + w + 6:.1f}" y="{y + bh - 4}" font-size="11" fill="#59636e">'
                             f'{_e(when)} {_e(_fmt(v))} ms</text>')
            y += bh
        y += 12
    parts.append("</svg>")
    legend = ('<div class="legend"><span><span class="sw" style="background:#8c959f"></span>before</span>'
              '<span><span class="sw" style="background:#2563eb"></span>after</span></div>')
    return legend + '<figure class="scroll">' + "".join(parts) + "</figure>"


def _validation(v) -> str:
    out = ['<section id="validation"><h2>Validation</h2>']
    if not isinstance(v, dict):
        out.append(f"<pre>{_e(_fmt(v))}</pre></section>")
        return "".join(out)
    passed = v.get("passed")
    if passed is True:
        out.append('<div class="verdict pass" role="status">✔ PASSED</div>')
    elif passed is False:
        out.append('<div class="verdict fail" role="alert">✘ FAILED</div>')
    else:
        out.append('<div class="verdict unknown">No verdict recorded</div>')
    failures = v.get("failures")
    if failures:
        items = failures if isinstance(failures, list) else [failures]
        out.append('<ul class="failures">' + "".join(f"<li>{_e(f)}</li>" for f in items) + "</ul>")
    if v.get("synthetic_data") is True:
        out.append('<p class="note"><strong>Measured on synthetic random inputs</strong>: agreement and '
                   'accuracy say little about real data.</p>')
    known = {"passed", "failures", "outputs", "classifier", "latency"}
    outputs = v.get("outputs")
    if isinstance(outputs, list) and outputs:
        out.append("<h3>Outputs</h3>" + _records_table(outputs))
    elif isinstance(outputs, dict) and outputs:
        recs = [dict(name=k, **m) if isinstance(m, dict) else {"name": k, "value": m} for k, m in outputs.items()]
        out.append("<h3>Outputs</h3>" + _records_table(recs))
    cls = v.get("classifier")
    if isinstance(cls, dict) and cls:
        out.append("<h3>Classifier</h3>" + _paired_table(cls))
    lat = v.get("latency")
    if isinstance(lat, dict) and lat:
        speed = lat.get("ratio")
        note = ""
        if _finite(speed):
            faster = f" ({_fmt(1 / speed)}× faster)" if speed > 0 else ""
            note = (f'<p class="note">Latency after / before: <strong>{_e(_fmt(speed))}</strong>'
                    f'{_e(faster)}</p>')
        rest = {k: x for k, x in lat.items() if k != "ratio"}
        out.append("<h3>Latency</h3>" + note + _latency_svg(rest) + _paired_table(rest))
    other = {k: x for k, x in v.items() if k not in known}
    if other:
        scal = {k: x for k, x in other.items() if not isinstance(x, (dict, list))}
        if scal:
            out.append("<h3>Details</h3>" + _paired_table(scal))
        for k, x in other.items():
            if isinstance(x, dict) and x:
                out.append(f"<h3>{_e(_label(k))}</h3>" + _paired_table(x))
            elif isinstance(x, list) and x:
                if all(isinstance(r, dict) for r in x):
                    out.append(f"<h3>{_e(_label(k))}</h3>" + _records_table(x))
                else:
                    out.append(f"<h3>{_e(_label(k))}</h3><pre>{_e(_fmt(x))}</pre>")
    out.append("</section>")
    return "".join(out)


# ---------------------------------------------------------------- curves

def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _curve_points(data) -> tuple[list[dict], dict]:
    """Points and axis labels from a list of {x, y, label} or {"points": [...], "x_label": ...}."""
    meta = {}
    if isinstance(data, dict):
        meta = {k: data.get(k) for k in ("title", "x_label", "y_label", "xlabel", "ylabel") if data.get(k)}
        data = data.get("points", [])
    pts = [p for p in data if isinstance(p, dict) and _finite(p.get("x")) and _finite(p.get("y"))] \
        if isinstance(data, list) else []
    return pts, meta


def _series(pts: list[dict]) -> list[tuple[str | None, list[dict]]]:
    """Labels that repeat name series; labels that do not annotate single points of one series."""
    labels = [p.get("label") for p in pts]
    counts: dict = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    if any(c > 1 for lab, c in counts.items() if lab is not None) and len(counts) > 1:
        by: dict = {}
        for p in pts:
            by.setdefault(p.get("label"), []).append(p)
        return [(None if k is None else str(k), sorted(v, key=lambda p: p["x"])) for k, v in by.items()]
    return [(None, sorted(pts, key=lambda p: p["x"]))]


def _line_chart(pts: list[dict], x_label: str, y_label: str, aria: str) -> str:
    series = _series(pts)
    xs = [p["x"] for p in pts]
    ys = [p["y"] for p in pts]
    xt, yt = _nice_ticks(min(xs), max(xs)), _nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    W, H, ml, mr, mt, mb = 680, 340, 64, 20, 14, 48
    pw, ph = W - ml - mr, H - mt - mb

    def sx(x):
        return ml + (x - x0) / ((x1 - x0) or 1) * pw

    def sy(y):
        return mt + ph - (y - y0) / ((y1 - y0) or 1) * ph

    parts = [f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
             f'class="chart" role="img" aria-label="{_e(aria)}">',
             f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#d1d9e0"/>']
    for t in yt:
        y = sy(t)
        parts.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" stroke="#eaeef2"/>'
                     f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#59636e">'
                     f'{_e(f"{t:g}")}</text>')
    for t in xt:
        x = sx(t)
        parts.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + ph}" stroke="#eaeef2"/>'
                     f'<text x="{x:.1f}" y="{mt + ph + 16}" text-anchor="middle" font-size="11" fill="#59636e">'
                     f'{_e(f"{t:g}")}</text>')
    parts.append(f'<text x="{ml + pw / 2:.1f}" y="{H - 8}" text-anchor="middle" font-size="12" fill="#1f2328">'
                 f'{_e(x_label)}</text>'
                 f'<text transform="translate(14 {mt + ph / 2:.1f}) rotate(-90)" text-anchor="middle" '
                 f'font-size="12" fill="#1f2328">{_e(y_label)}</text>')
    for i, (name, sp) in enumerate(series):
        color = _PALETTE[i % len(_PALETTE)]
        coords = " ".join(f"{sx(p['x']):.1f},{sy(p['y']):.1f}" for p in sp)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        for p in sp:
            tip = f"{p.get('label') or name or ''} x={_fmt(p['x'])} y={_fmt(p['y'])}".strip()
            parts.append(f'<circle cx="{sx(p["x"]):.1f}" cy="{sy(p["y"]):.1f}" r="3.5" fill="{color}">'
                         f'<title>{_e(tip)}</title></circle>')
    parts.append("</svg>")
    legend = ""
    if len(series) > 1:
        legend = '<div class="legend">' + "".join(
            f'<span><span class="sw" style="background:{_PALETTE[i % len(_PALETTE)]}"></span>{_e(n)}</span>'
            for i, (n, _) in enumerate(series)) + "</div>"
    return legend + '<figure class="scroll">' + "".join(parts) + "</figure>"


def _curve_section(key: str, title: str, data, x_default: str, y_default: str) -> str:
    pts, meta = _curve_points(data)
    out = [f'<section id="{key}"><h2>{_e(meta.get("title") or title)}</h2>']
    if not pts:
        out.append('<p class="note">No plottable points.</p></section>')
        return "".join(out)
    xl = meta.get("x_label") or meta.get("xlabel") or x_default
    yl = meta.get("y_label") or meta.get("ylabel") or y_default
    out.append(_line_chart(pts, xl, yl, title))
    out.append("<details><summary>Points</summary>" + _records_table(
        [{"label": p.get("label"), "x": p["x"], "y": p["y"]} for p in pts]) + "</details>")
    out.append("</section>")
    return "".join(out)


# ---------------------------------------------------------------- page

def render_html(report: dict, *, command: str | None = None, title: str = "onnxprune report") -> str:
    """Render a prune report as one self-contained HTML5 document (returned as a string)."""
    if not isinstance(report, dict):
        raise TypeError(f"report must be a dict, got {type(report).__name__}")
    groups = _groups(report)
    settings = report.get("settings") if isinstance(report.get("settings"), dict) else {}
    sub = [f"onnxprune {report.get('onnxprune_version', '?')}"]
    if settings.get("strategy") or settings.get("criterion"):
        sub.append(" ".join(str(x) for x in (settings.get("strategy"), settings.get("criterion")) if x))
    if settings.get("ratio") is not None:
        sub.append(f"ratio {_fmt(settings.get('ratio'))}")
    body = [f"<header><h1>{_e(title)}</h1><p class=\"sub\">{_e(' · '.join(sub))}</p></header>",
            _summary(report)]
    if "validation" in report and report["validation"] is not None:
        body.append(_validation(report["validation"]))
    body.append(_bar_chart(groups))
    body.append(_group_table(groups))
    if report.get("sensitivity") is not None:
        body.append(_curve_section("sensitivity", "Sensitivity", report["sensitivity"], "x", "y"))
    if report.get("budget_curve") is not None:
        body.append(_curve_section("budget-curve", "Budget curve", report["budget_curve"], "x", "y"))
    body.append('<section id="command"><h2>Reproduce</h2>')
    if command:
        body.append(f"<pre><code>{_e(command)}</code></pre>")
    else:
        body.append('<p class="note">The command was not recorded; the settings above describe the run.</p>')
    body.append("</section>")
    raw = json.dumps(report, indent=1, default=str, allow_nan=True)
    body.append(f"<details><summary>Raw report (JSON)</summary><pre>{_e(raw)}</pre></details>")
    body.append(f"<footer>{_e(report.get('format', 'onnxprune.report'))} v{_e(report.get('version', '?'))}"
                f" · generated by onnxprune {_e(report.get('onnxprune_version', '?'))}</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">\n"
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")
