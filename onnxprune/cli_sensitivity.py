"""``onnxprune sensitivity``: the per-group sweep as a table, JSON and a plot."""

from __future__ import annotations

import io
import json
from pathlib import Path

import click

from .cli import (CRITERIA, DEFAULT_ROUND_TO, METRIC_CHOICES, _check_outputs, _image_options, _input_shapes, cli,
                  image_options, input_shape_option, norm_option,
                  attention_option, _head_mode)
from .errors import BadArgumentError
from .model import write_bytes_atomic
from .fmt import human_count

PLOT_HINT = "--plot needs matplotlib (pip install 'onnxprune[plot]')"
LEGEND_MAX = 12  # more groups than this: the most sensitive ones are named, the rest drawn grey


def _parse_ratios(text: str) -> tuple:
    from .sensitivity import check_ratios

    try:
        values = [float(v) for v in text.split(",")]
        return check_ratios(values)
    except (ValueError, BadArgumentError):
        raise BadArgumentError(f"--ratios takes comma-separated fractions in [0, 1), got '{text}'") from None


def _parse_ids(text: str | None):
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise BadArgumentError(f"--groups takes comma-separated group ids (see onnxprune inspect), got '{text}'") \
            from None


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BadArgumentError(PLOT_HINT) from None
    return plt


@cli.command("sensitivity")
@click.argument("model", type=click.Path())
@click.option("--calib", "calib_data", required=True, metavar="DATA",
              help="Data the metric is measured on (.npz, a folder of .npz/.npy, images:DIR, random:N).")
@click.option("--criterion", type=click.Choice(CRITERIA), default="l2", show_default=True,
              help="Which channels a group loses at each ratio.")
@click.option("--ratios", default="0.1,0.2,0.3,0.5,0.7", show_default=True,
              help="Comma-separated fractions of each group to remove, in [0, 1).")
@click.option("--metric", type=click.Choice(METRIC_CHOICES), default="agreement", show_default=True,
              help="Measured against the dense model (accuracy, recall, f1: against --labels).")
@click.option("--labels", help="Array in the data holding class labels.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Samples per ONNX Runtime run.")
@click.option("--max-samples", type=int, help="Use at most this many samples.")
@click.option("--groups", "group_ids", metavar="IDS", help="Comma-separated group ids to sweep (default: every "
              "prunable group; ids from onnxprune inspect).")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="Worker processes evaluating candidates in parallel (0: one per CPU core).")
@click.option("--ray", "ray_address", metavar="auto|ADDRESS",
              help="Evaluate candidates as tasks on a Ray cluster instead (pip install 'onnxprune[ray]'): 'auto' "
                   "(RAY_ADDRESS or the cluster ray start started here), host:port or ray://host:port.")
@click.option("--folds", type=int, default=1, show_default=True,
              help="Cross-validate: channels chosen from the statistics of K-1 folds of the data, the metric "
                   "measured on the held-out fold, averaged over the K folds (1: no cross-validation).")
@click.option("--target-macs", type=float, help="Also allocate per-group counts from the curves to keep at most this "
              "fraction of the MACs, and measure that combined model.")
@click.option("--round-to", type=int, default=DEFAULT_ROUND_TO, show_default=True,
              help="With --target-macs: kept counts are multiples of this (the sweep itself uses exact ratios).")
@click.option("--min-keep", type=int, default=1, show_default=True, help="With --target-macs: per-group floor.")
@click.option("--max-ratio", type=float, default=0.9, show_default=True,
              help="With --target-macs: at most this fraction of any one group is removed.")
@click.option("--loss", type=click.Choice(["auto", "ce", "projection"]), default="auto", show_default=True,
              help="Loss of the gradient criteria (taylor, fisher).")
@click.option("--fallback-criterion", type=click.Choice(CRITERIA),
              help="Score the groups the criterion cannot with this one; without it they are not swept.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True,
              help="ONNX Runtime execution provider.")
@input_shape_option
@norm_option
@attention_option
@image_options
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result on stdout instead of the table.")
@click.option("--out", "out_path", type=click.Path(), help="Write the JSON result here.")
@click.option("--plot", "plot_path", type=click.Path(), help="Write a PNG of metric vs ratio per group (matplotlib).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success (and no progress).")
def sensitivity_cmd(model, calib_data, criterion, ratios, metric, labels, batch_size, max_samples, group_ids, jobs,
                    ray_address, folds, target_macs, round_to, min_keep, max_ratio, loss, fallback_criterion, device,
                    input_shape, prune_norm_spaces, attention, image_size, mean, std, layout, channel_order, as_json, out_path,
                    plot_path, quiet):
    """Prune each group of MODEL alone at a ladder of ratios and measure the metric.

    Prints a table of the metric per group and ratio (how fragile each group is), and
    with --target-macs the allocation the curves suggest, predicted and measured."""
    from .model import write_text_atomic
    from .sensitivity import sensitivity

    parsed = _parse_ratios(ratios)
    ids = _parse_ids(group_ids)
    _check_outputs(model, out_path, plot_path)
    plt = _pyplot() if plot_path else None  # before any work: nothing is written without it
    result = sensitivity(model, calib_data, criterion=criterion, ratios=parsed, metric=metric, labels=labels,
                         batch_size=batch_size, max_samples=max_samples, input_shapes=_input_shapes(input_shape),
                         jobs=jobs, device=device, progress=False if (quiet or as_json) else None, groups=ids,
                         loss=loss, fallback_criterion=fallback_criterion, prune_norm_spaces=prune_norm_spaces,
                         image_options=_image_options(image_size, mean, std, layout, channel_order),
                         target_macs=target_macs, round_to=round_to, min_keep=min_keep, max_ratio=max_ratio,
                         folds=folds, ray=ray_address, head_mode=_head_mode(attention))
    if out_path:
        write_text_atomic(out_path, json.dumps(result, indent=1))
    if plot_path:
        _write_plot(plt, result, plot_path, model)
    if as_json:
        click.echo(json.dumps(result, indent=1))
    elif not quiet:
        click.echo("\n".join(table_lines(result, model)))


def _fmt(value, metric: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if metric == "mse" else f"{value:.3f}"


def table_lines(result: dict, model: str) -> list[str]:
    s = result["settings"]
    metric, ratios = s["metric"], s["ratios"]
    data = f"{result['samples']} {'synthetic ' if result['synthetic_data'] else ''}samples"
    if s.get("folds", 1) > 1:
        data += f", {s['folds']}-fold cross-validated"
    lines = [f"{model}: {metric} of each group pruned alone (criterion {s['criterion']}) against the dense model "
             f"({_fmt(result['dense']['value'], metric)}) on {data}; {result['candidates']} candidates in "
             f"{result['seconds']:.1f} s"]
    head = f"{'id':>4}  {'channels':>8}  {'MACs%':>6}  " + "  ".join(f"{'r=' + format(r, 'g'):>7}" for r in ratios)
    lines.append(head + "  name")
    for g in result["groups"]:
        pct = "" if g["macs_share"] is None else f"{100 * g['macs_share']:.1f}"
        cells = "  ".join(f"{_fmt(p['value'], metric):>7}" for p in g["points"])
        lines.append(f"{g['id']:>4}  {g['channels']:>8}  {pct:>6}  {cells}  {g['name']}")
    if result["skipped"]:
        why = next(iter(result["skipped"].values()))
        lines.append(f"{len(result['skipped'])} group(s) not swept: the criterion cannot score them ({why})")
    a = result.get("allocation")
    if a:
        lines.append(f"allocation for --target-macs {a['target_macs']:g} (round-to {a['round_to']}): "
                     f"{a['macs_ratio']:.3f} of the MACs ({human_count(result['dense']['macs'] * a['macs_ratio'])}), "
                     f"{a['groups_pruned']} group(s) pruned: "
                     + ", ".join(f"{gid}->{k}" for gid, k in a["counts"].items()))
        lines.append(f"  {metric} drop: predicted {_fmt(a['predicted_drop'], metric)} (sum of single-group drops), "
                     f"measured {_fmt(a['measured_drop'], metric)}")
    return lines


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _write_plot(plt, result: dict, path: str, model: str) -> None:
    metric = result["settings"]["metric"]
    dense = result["dense"]["value"]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    curves = []
    for g in result["groups"]:
        xs = [p["ratio"] for p in g["points"]]
        ys = [p["value"] for p in g["points"]]
        if xs[0] > 0:
            xs, ys = [0.0] + xs, [dense] + ys
        curves.append((abs(ys[-1] - dense), g, xs, ys))
    named = {id(c[1]) for c in sorted(curves, key=lambda c: -c[0])[:LEGEND_MAX]}
    for _, g, xs, ys in curves:
        if id(g) in named:
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, label=f"{g['id']}: {_short(g['name'])}")
        else:
            ax.plot(xs, ys, color="0.75", linewidth=0.8, zorder=0)
    ax.set_xlabel("fraction of the group's channels removed (group pruned alone)")
    ax.set_ylabel(f"{metric} vs dense")
    ax.set_title(f"{Path(model).name}: sensitivity per group ({result['samples']} samples)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, loc="best", title=None if len(curves) <= LEGEND_MAX else "most sensitive groups",
              title_fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
