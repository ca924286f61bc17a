"""The stylesheet of the HTML report (inline: the page loads nothing from outside)."""

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg2:#f6f8fa;--kept:#2f7d4f;--removed:#d9a0a0;
--ok:#1a7f37;--okbg:#dafbe1;--bad:#cf222e;--badbg:#ffebe9;--warn:#9a6700;--warnbg:#fff8c5}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;padding:16px;color:var(--fg);background:#fff;line-height:1.45;
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1100px;margin:0 auto}
h1{font-size:1.6em;margin:.2em 0 .1em}
h2{font-size:1.25em;margin:1.6em 0 .5em;padding-bottom:.2em;border-bottom:1px solid var(--line)}
h3{font-size:1.05em;margin:1.1em 0 .4em}
.sub{color:var(--muted);margin:0 0 1em}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;font-size:.9em}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:10px}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 12px;background:var(--bg2);break-inside:avoid}
.card .k{color:var(--muted);font-size:.85em;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:1.3em;font-weight:600;overflow-wrap:anywhere}
.card .d{color:var(--muted);font-size:.88em}
.good{color:var(--ok)}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;margin:.3em 0 1em}
table.compact{width:auto;min-width:min(100%,520px)}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--bg2);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.name{overflow-wrap:anywhere;word-break:break-word;min-width:10em}
tr{break-inside:avoid}
.tag{display:inline-block;padding:0 6px;border-radius:10px;font-size:.82em;font-weight:600;white-space:nowrap}
.t-pruned{background:var(--okbg);color:var(--ok)}
.t-blocked{background:var(--badbg);color:var(--bad)}
.t-same{background:var(--bg2);color:var(--muted);border:1px solid var(--line)}
.t-inexact{background:var(--warnbg);color:var(--warn)}
.reason{color:var(--muted);font-size:.9em;overflow-wrap:anywhere}
.verdict{border-radius:8px;padding:12px 16px;font-size:1.3em;font-weight:700;margin:.4em 0 .8em;break-inside:avoid}
.verdict.pass{background:var(--okbg);color:var(--ok);border:2px solid var(--ok)}
.verdict.fail{background:var(--badbg);color:var(--bad);border:2px solid var(--bad)}
.verdict.unknown{background:var(--bg2);color:var(--muted);border:2px solid var(--line)}
ul.failures{color:var(--bad);margin:.2em 0 1em}
figure{margin:.4em 0 1em;break-inside:avoid}
figcaption{color:var(--muted);font-size:.88em}
svg{max-width:100%;height:auto;display:block}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
.legend{display:flex;flex-wrap:wrap;gap:12px;font-size:.88em;color:var(--muted);margin:.2em 0}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;margin-right:4px}
pre{background:var(--bg2);border:1px solid var(--line);border-radius:6px;padding:10px 12px;
white-space:pre-wrap;overflow-wrap:anywhere;margin:.3em 0 1em}
.note{color:var(--muted)}
dl.settings{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:.3em 0 1em}
dl.settings dt{color:var(--muted)}
dl.settings dd{margin:0;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
details summary{cursor:pointer;color:var(--muted)}
footer{margin-top:2em;color:var(--muted);font-size:.85em;border-top:1px solid var(--line);padding-top:.6em}
@media (max-width:600px){body{padding:10px;font-size:14px}th,td{padding:3px 5px}.card .v{font-size:1.15em}
.scroll svg.chart{min-width:440px}.scroll svg.bars{min-width:400px}}
@media print{body{padding:0;font-size:11pt}main{max-width:none}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
h2{break-after:avoid}details{display:none}.scroll{overflow:visible}
a{color:inherit;text-decoration:none}}
"""
