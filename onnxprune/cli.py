"""Command line: thin wrappers that parse options, call the API and print.

Errors print one line on stderr and exit with the code documented in
:mod:`onnxprune.errors` (tracebacks only with ``--debug``).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import warnings
from pathlib import Path

import click

from . import __version__
from .cli_finetune_options import finetune_options, options_from
from .errors import EXIT_CODES, EXIT_INTERNAL, EXIT_USAGE, BadArgumentError, OnnxPruneError
from .fmt import human_count as _human

CRITERIA = ["l1", "l2", "bn", "fpgm", "connectivity",  # weights only
            "activation", "apoz", "entropy", "variance", "wanda", "taylor", "fisher", "obs"]  # need --calib
METRIC_CHOICES = ["agreement", "accuracy", "recall", "f1", "cosine", "mse"]
DEFAULT_ROUND_TO = 16  # measured: docs/benchmarks.md, kept-channel rounding


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return Path(a).resolve() == Path(b).resolve()


def _check_outputs(model: str, *outs) -> None:
    """Refuse before any work: an output that is the input, or a place that cannot be
    written (so no output is written when a later one would fail)."""
    from .model import check_writable

    for out in outs:
        if out and _same_file(model, out):
            raise BadArgumentError(f"output path {out} is the input model; refusing to overwrite it")
    for out in outs:
        if out:
            check_writable(out)


def _input_shapes(specs):
    from .shapes import parse_input_shapes

    return parse_input_shapes(specs)


def image_options(fn):
    """--image-size/--mean/--std/--layout/--channel-order for images:DIR data."""
    opts = [
        click.option("--image-size", type=int, help="images:DIR: square crop side (default: the model's, else 224)."),
        click.option("--mean", type=str, help="images:DIR: per-channel mean after scaling to [0,1] "
                     "(default 0.485,0.456,0.406)."),
        click.option("--std", type=str, help="images:DIR: per-channel std (default 0.229,0.224,0.225)."),
        click.option("--layout", type=click.Choice(["nchw", "nhwc"]), help="images:DIR: default from the model input."),
        click.option("--channel-order", type=click.Choice(["rgb", "bgr"]), default="rgb", show_default=True,
                     help="images:DIR: channel order."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _image_options(image_size, mean, std, layout, channel_order):
    from .images import IMAGENET_MEAN, IMAGENET_STD, ImageOptions

    def triple(text, name, default):
        if text is None:
            return default
        try:
            return tuple(float(v) for v in text.split(","))
        except ValueError:
            raise BadArgumentError(f"--{name} takes three comma-separated numbers, got '{text}'") from None

    return ImageOptions(image_size, triple(mean, "mean", IMAGENET_MEAN), triple(std, "std", IMAGENET_STD), layout,
                        channel_order)


def _ratios(text):
    if text is None:
        return None
    from .sensitivity import check_ratios

    return check_ratios(text.split(","))


def _recover_options(steps: str, ridge, token_mask: str = "auto"):
    from .recover.run import RecoverOptions

    steps = tuple(s.strip() for s in steps.split(",") if s.strip())
    extra = {} if ridge is None else {"ridge": ridge}
    return RecoverOptions(steps=steps, token_mask=None if token_mask == "none" else token_mask, **extra)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxprune")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def cli(ctx, debug):
    """Structured pruning for ONNX models from any framework."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


input_shape_option = click.option(
    "--input-shape", "input_shape", multiple=True, metavar="NAME=DxDx..",
    help="Concrete shape for a model input with dynamic dims (e.g. input=1x3x224x224); repeatable.")
norm_option = click.option(
    "--prune-norm-spaces", is_flag=True,
    help="Also prune channels normalized together by LayerNorm/GroupNorm (inexact: changes their statistics).")
attention_option = click.option(
    "--attention", "attention", type=click.Choice(["heads", "head-dims"]), default="heads", show_default=True,
    help="Attention groups: remove whole heads, or the same head-dim indices inside every head.")


def _head_mode(attention: str) -> str:
    return "dims" if attention == "head-dims" else "heads"


@cli.command()
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the machine-readable report.")
@click.option("--all", "show_all", is_flag=True, help="List every group, not just the first 40.")
@input_shape_option
@norm_option
@attention_option
def inspect(model, as_json, show_all, input_shape, prune_norm_spaces, attention):
    """Show prunable channel groups, their MACs share, and what blocked the rest."""
    from .api import inspect as api_inspect

    report = api_inspect(model, input_shapes=_input_shapes(input_shape), prune_norm_spaces=prune_norm_spaces,
                         head_mode=_head_mode(attention))
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    m, s = report["model"], report["summary"]
    click.echo(f"{model}: opset {m['opset']}, {m['nodes']} nodes, {_human(m['params'])} params, "
               f"{_human(m['macs'])} MACs")
    share = s["prunable_macs_share"]
    click.echo(f"{s['groups']} channel groups: {s['prunable']} prunable ({s['prunable_channels']} channels"
               + (f", touching {share:.0%} of MACs" if share is not None else "") + f"), {s['blocked']} blocked")
    if s.get("head_mode") == "dims":
        click.echo("attention: the same head-dim indices inside every head (--attention head-dims)")
    click.echo(f"{'id':>4}  {'channels':>8}  {'MACs%':>6}  {'kind':<24}  name / blocked by")
    rows = report["groups"] if show_all else report["groups"][:40]
    for g in rows:
        pct = "" if g["macs_share"] is None else f"{100 * g['macs_share']:.1f}"
        status = g["name"] if g["prunable"] else "BLOCKED: " + g["blocked_by"][0]
        if g["prunable"] and not g["exact"]:
            status += "  (inexact: " + g["inexact_because"][0] + ")"
        click.echo(f"{g['id']:>4}  {g['channels']:>8}  {pct:>6}  {g['kind']:<24}  {status}")
    if len(report["groups"]) > len(rows):
        click.echo(f"... {len(report['groups']) - len(rows)} more (use --all or --json)")
    if s["blocked_reasons"]:
        click.echo("blocked because:")
        for reason, n in s["blocked_reasons"].items():
            click.echo(f"  {n:>3} x {reason}")


def _write_outputs(result, output, report_path, plan_out, html_path=None):
    from .model import write_text_atomic

    result.save(output)
    if plan_out:
        result.save_plan(plan_out)
    if report_path:
        write_text_atomic(report_path, json.dumps(result.report, indent=1))
    if html_path:
        from .html import render_html

        command = shlex.join(["onnxprune"] + sys.argv[1:])
        write_text_atomic(html_path, render_html(result.report, command=command))


def _summary(result, output) -> list[str]:
    r = result.report
    lines = [f"pruned {r['groups_pruned']} of {r['groups_prunable']} prunable groups "
             f"({r['groups_total']} total) in {r['seconds']:.2f} s"]
    if r["params_ratio"] is not None:
        lines.append(f"params  {_human(r['params_before'])} -> {_human(r['params_after'])} ({r['params_ratio']:.3f}x)")
    if r["macs_ratio"] is not None:
        lines.append(f"MACs    {_human(r['macs_before'])} -> {_human(r['macs_after'])} ({r['macs_ratio']:.3f}x)")
    else:
        lines.append(f"MACs    unknown ({r.get('macs_unknown_reason') or 'shapes cannot be inferred'})")
    lines.append(f"size    {r['bytes_before'] / 1e6:.2f} MB -> {r['bytes_after'] / 1e6:.2f} MB")
    lines.append(f"wrote {output}")
    return lines


@cli.command()
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Pruned model path.")
@click.option("--ratio", type=float, help="Fraction of channels to remove, in [0, 1).")
@click.option("--criterion", type=click.Choice(CRITERIA), default="l2", show_default=True,
              help="Channel importance criterion.")
@click.option("--global/--uniform", "global_ranking", default=None,
              help="Rank normalized scores across groups, or remove the same ratio everywhere. "
                   "Default: uniform for --ratio, global for --target-macs.")
@click.option("--target-macs", type=float, help="Keep at most this fraction of the MACs (searches the ratio).")
@click.option("--target-params", type=float, help="Keep at most this fraction of the parameters (searches the ratio).")
@click.option("--target-latency", type=float, help="Keep at most this fraction of the dense model's ONNX Runtime "
              "latency on this machine (--device), measured per candidate.")
@click.option("--exclude", metavar="REGEX", help="Keep whole every group with a node whose name matches REGEX.")
@click.option("--allocation", type=click.Choice(["uniform", "global", "sensitivity", "search"]),
              help="How much to cut where: the same ratio everywhere, a global ranking of normalized scores, "
                   "from each group's measured sensitivity, or searched over candidate models (the last two need "
                   "--target-macs and --calib).")
@click.option("--search-candidates", type=int, default=24, show_default=True,
              help="Pruned models --allocation search evaluates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --allocation search.")
@click.option("--search-repair/--no-search-repair", default=None,
              help="Repair every --allocation search candidate before measuring it, as the result is repaired "
                   "(default: with --recover).")
@click.option("--budget-probes", type=int, default=6, show_default=True,
              help="Bisection steps of a --max-drop budget over the MACs target (resolution 2^-N).")
@click.option("--sensitivity-ratios", metavar="R1,R2,...", help="Ratios each group is measured at for "
              "--allocation sensitivity (default 0.1,0.2,0.3,0.5,0.7).")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="Worker processes for the candidates of --allocation sensitivity or search (0: one per core).")
@click.option("--ray", "ray_address", metavar="auto|ADDRESS",
              help="Run the candidates of --allocation sensitivity or search on a Ray cluster "
                   "(pip install 'onnxprune[ray]').")
@click.option("--folds", type=int, default=1, show_default=True,
              help="Cross-validate the sensitivity sweep over K folds of the calibration data (1: off).")
@click.option("--round-to", type=int, default=DEFAULT_ROUND_TO, show_default=True,
              help="Kept channel counts are multiples of this (fast kernels; halved for groups narrower than "
                   "twice it); 1 disables.")
@click.option("--min-keep", type=int, default=1, show_default=True, help="Channels every group keeps at least.")
@click.option("--max-ratio", type=float, default=0.9, show_default=True,
              help="At most this fraction of any one group is removed.")
@click.option("--reduction", type=click.Choice(["sum", "mean", "max"]), default="sum", show_default=True,
              help="How member scores combine within a group.")
@click.option("--normalize", type=click.Choice(["mean", "max", "sum", "none"]), default="mean", show_default=True,
              help="Per-group score normalization (matters for --global).")
@input_shape_option
@norm_option
@attention_option
@click.option("--report", "report_path", type=click.Path(), help="Write a JSON report here.")
@click.option("--plan-out", type=click.Path(), help="Write the pruning plan (JSON) here.")
@click.option("--html", "html_path", type=click.Path(), help="Write a self-contained HTML report here.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report on stdout instead of a summary.")
@click.option("--no-verify", is_flag=True, help="Skip the onnx.checker + ONNX Runtime check of the result.")
@click.option("--val", "val_data", metavar="DATA",
              help="Validation data (.npz keyed by input name, a folder of .npz/.npy, or random:N): compare "
                   "the result with the original before writing it.")
@click.option("--labels", help="Array in the validation data holding class labels.")
@click.option("--metric", type=click.Choice(METRIC_CHOICES), default="agreement", show_default=True,
              help="What --max-drop is measured on.")
@click.option("--max-drop", type=float, help="With a ratio or target: refuse to write a model whose metric drops by "
              "more than this. Alone: a budget, the smallest model (MACs target bisected, each probe repaired and "
              "measured on --val) whose drop stays within it.")
@click.option("--force", is_flag=True, help="Write the model even when it misses --max-drop.")
@click.option("--calib", "calib_data", metavar="DATA",
              help="Calibration data for the data-aware criteria (.npz, a folder of .npz/.npy, images:DIR, "
                   "random:N); the result is also validated on it when --val is not given.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Samples per ONNX Runtime run.")
@click.option("--max-samples", type=int, help="Use at most this many calibration samples.")
@click.option("--loss", type=click.Choice(["auto", "ce", "projection"]), default="auto", show_default=True,
              help="Loss of the gradient criteria (taylor, fisher): cross-entropy for classifiers (against "
                   "--labels or the model's own prediction), a random output projection otherwise.")
@click.option("--fallback-criterion", type=click.Choice(CRITERIA),
              help="Score the groups the criterion cannot (no gradient through an op) with this one; "
                   "without it they stay whole.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="ONNX Runtime execution provider for calibration and validation.")
@click.option("--recover/--no-recover", default=None,
              help="Repair the remaining weights from the calibration data (least-squares reconstruction, bias "
                   "compensation, BatchNorm statistics). Default: on with --calib.")
@click.option("--repair-steps", default="reconstruct,bias,bn", show_default=True,
              help="Which repairs run (comma-separated subset).")
@click.option("--ridge", type=float, help="Ridge strength of the reconstruction toward the dense weights, relative "
              "to the Gram diagonal (default 0.1).")
@click.option("--token-mask", default="auto", show_default=True,
              help="Input marking the real tokens of padded sequence batches (0 = padding): the repair leaves "
                   "padded positions out of its statistics. auto: an input named *attention_mask; none: every "
                   "position counts.")
@click.option("--finetune", "do_finetune", is_flag=True,
              help="After repair, distil the pruned model toward the dense one on the calibration data "
                   "(options below; see onnxprune finetune).")
@finetune_options
@image_options
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success (and no progress).")
def prune(model, output, ratio, criterion, global_ranking, target_macs, target_params, target_latency, exclude, allocation, search_candidates, seed, search_repair, budget_probes, sensitivity_ratios, jobs, ray_address, folds, round_to, min_keep, max_ratio, reduction,
          normalize, input_shape, prune_norm_spaces, attention, report_path, plan_out, html_path, as_json, no_verify, val_data,
          labels, metric, max_drop, force, calib_data, batch_size, max_samples, loss, fallback_criterion, device,
          recover, repair_steps, ridge, token_mask, image_size, mean, std, layout, channel_order, quiet, do_finetune, **ft):
    """Prune MODEL and write the smaller model to OUTPUT."""
    from .api import prune as api_prune

    finetune = options_from(ft, batch_size, seed, device) if do_finetune else None

    _check_outputs(model, output, report_path, plan_out, html_path)
    if max_drop is not None and val_data is None and calib_data is None:
        raise BadArgumentError("--max-drop needs validation data (--val DATA or --calib DATA)")
    result = api_prune(model, ratio=ratio, criterion=criterion, global_ranking=global_ranking,
                       target_macs=target_macs, round_to=round_to, min_keep=min_keep, max_ratio=max_ratio,
                       reduction=reduction, normalize=normalize, input_shapes=_input_shapes(input_shape),
                       prune_norm_spaces=prune_norm_spaces, verify=not no_verify, validation=val_data,
                       labels=labels, metric=metric, max_drop=max_drop, force=force, calibration=calib_data,
                       batch_size=batch_size, max_samples=max_samples, loss=loss,
                       fallback_criterion=fallback_criterion, device=device,
                       image_options=_image_options(image_size, mean, std, layout, channel_order),
                       progress=False if (quiet or as_json) else None, recover=recover,
                       recover_options=_recover_options(repair_steps, ridge, token_mask), allocation=allocation,
                       sensitivity_ratios=_ratios(sensitivity_ratios), jobs=jobs, target_params=target_params,
                       exclude=exclude, target_latency=target_latency, search_candidates=search_candidates,
                       seed=seed, finetune=finetune, folds=folds, ray=ray_address, search_repair=search_repair,
                       budget_probes=budget_probes, head_mode=_head_mode(attention))
    _write_outputs(result, output, report_path, plan_out, html_path)
    if as_json:
        click.echo(json.dumps(result.report, indent=1))
    elif not quiet:
        lines = _summary(result, output)
        if "recovery" in result.report:
            lines.insert(-1, _recovery_line(result.report["recovery"]))
        if "finetune" in result.report:
            from .cli_finetune import summary_line

            lines.insert(-1, summary_line(result.report["finetune"]))
        if "budget" in result.report:
            lines.insert(-1, _budget_line(result.report["budget"]))
        if "latency_target" in result.report:
            lines.insert(-1, _latency_target_line(result.report["latency_target"]))
        if "validation" in result.report:
            lines[-1:-1] = _validation_lines(result.report["validation"])
        click.echo("\n".join(lines))


def _budget_line(b: dict) -> str:
    passed = [p for p in b["probes"] if p["passed"]]
    return (f"budget  smallest of {len(b['probes'])} probes within --max-drop {b['max_drop']:g} ({b['metric']} on the "
            f"{b['data']} data{', repaired' if b['repaired'] else ''}): {b['target_macs']:.3f} of the MACs, drop "
            f"{min(passed, key=lambda p: p['target_macs'])['drop']:.4f}")


def _latency_target_line(t: dict) -> str:
    if t["final_ratio"] is None:
        return "latency target: the written model could not be timed"
    return (f"latency {t['final_ratio']:.3f}x of the dense model, timed again on the written model "
            f"(target {t['target']:g}: {'met' if t['met'] else 'MISSED'})")


def _recovery_line(rec: dict) -> str:
    layers = list(rec.get("layers", {}).values())
    if not layers:
        return "repair  nothing to repair"
    before = sum(l["error_before"] for l in layers) / len(layers)
    after = sum(l["error_after"] for l in layers) / len(layers)
    kept = sum(1 for l in layers if l.get("fallback"))
    return (f"repair  {len(layers)} layers ({', '.join(rec['steps'])}; {kept} fell back), calibration error "
            f"{before:.3f} -> {after:.3f} (mean relative), {rec['seconds']:.1f} s")


@cli.command("apply")
@click.argument("model", type=click.Path())
@click.argument("plan", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Pruned model path.")
@input_shape_option
@click.option("--report", "report_path", type=click.Path(), help="Write a JSON report here.")
@click.option("--no-verify", is_flag=True, help="Skip the onnx.checker + ONNX Runtime check of the result.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def apply_cmd(model, plan, output, input_shape, report_path, no_verify, quiet):
    """Apply a saved PLAN (from prune --plan-out) to MODEL."""
    from .api import apply as api_apply
    from .errors import InputError

    _check_outputs(model, output, report_path)
    try:
        text = Path(plan).read_text()
    except OSError as exc:
        raise InputError(f"{plan}: cannot read plan ({exc.strerror or exc})") from None
    result = api_apply(model, text, input_shapes=_input_shapes(input_shape), verify=not no_verify)
    _write_outputs(result, output, report_path, None)
    if not quiet:
        click.echo("\n".join(_summary(result, output)))


def _validation_lines(v: dict) -> list[str]:
    lines = []
    cls = v.get("classifier")
    if cls:
        parts = [f"top-1 agreement {cls['top1_agreement']:.3f}"]
        if "top5_agreement" in cls:
            parts.append(f"top-5 {cls['top5_agreement']:.3f}")
        for key in ("accuracy", "recall", "f1"):
            if f"{key}_before" in cls:
                parts.append(f"{key} {cls[key + '_before']:.3f} -> {cls[key + '_after']:.3f}")
        lines.append("quality " + ", ".join(parts) + f" on {v['samples']} samples")
    for o in v["outputs"]:
        if o.get("comparable"):
            snr = "identical" if o["snr_db"] is None else f"SNR {o['snr_db']:.1f} dB"
            lines.append(f"output  {o['name']}: max |diff| {o['max_abs_diff']:.4g}, cosine {o['cosine_mean']:.4f}, "
                         f"{snr}")
    lat = v.get("latency")
    if lat and lat.get("ratio") is not None:
        lines.append(f"latency p50 {lat['p50_before_ms']:.2f} ms -> {lat['p50_after_ms']:.2f} ms "
                     f"({lat['ratio']:.3f}x), p90 {lat['p90_before_ms']:.2f} -> {lat['p90_after_ms']:.2f} ms")
    m = v["model"]
    if m["macs_before"] and m["macs_after"] is not None:
        lines.append(f"model   params {_human(m['params_before'])} -> {_human(m['params_after'])}, "
                     f"MACs {_human(m['macs_before'])} -> {_human(m['macs_after'])}")
    lines.append("PASS" if v["passed"] else "FAIL: " + "; ".join(v["failures"]))
    return lines


@cli.command("validate")
@click.argument("original", type=click.Path())
@click.argument("pruned", type=click.Path())
@click.option("--data", metavar="DATA", help="Sample data (.npz keyed by input name, a folder, or random:N; "
              "default random:8).")
@click.option("--labels", help="Array in the data holding class labels.")
@click.option("--metric", type=click.Choice(METRIC_CHOICES), default="agreement", show_default=True)
@click.option("--max-drop", type=float, help="Fail when the metric drops by more than this.")
@click.option("--atol", type=float, help="Fail when any output differs by more than atol + rtol*|original|.")
@click.option("--rtol", type=float)
@click.option("--latency-runs", type=int, default=20, show_default=True, help="Timed runs per model (0: skip).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True,
              help="ONNX Runtime execution provider (the same for both models).")
@input_shape_option
@image_options
@click.option("--json", "as_json", is_flag=True, help="Print the machine-readable result.")
def validate_cmd(original, pruned, data, labels, metric, max_drop, atol, rtol, latency_runs, device, input_shape,
                 image_size, mean, std, layout, channel_order, as_json):
    """Compare PRUNED with ORIGINAL: outputs, agreement/accuracy, size, latency.

    Exits 0 when it passes --max-drop and the tolerances, 12 when it does not."""
    from .errors import ValidationFailed
    from .validate import validate

    result = validate(original, pruned, data, labels=labels, metric=metric, max_drop=max_drop, atol=atol,
                      rtol=rtol, latency_runs=latency_runs, input_shapes=_input_shapes(input_shape), device=device,
                      image_options=_image_options(image_size, mean, std, layout, channel_order),
                      progress=False if as_json else None)
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo("\n".join(_validation_lines(result)))
    if not result["passed"]:
        raise ValidationFailed(result["failures"][0])


@cli.command("exit-codes")
def exit_codes():
    """List the exit codes onnxprune uses."""
    for code, meaning in sorted(EXIT_CODES.items()):
        click.echo(f"{code:>3}  {meaning}")


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"onnxprune: warning: {message}\n"


def main(argv=None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if not debug:
        warnings.formatwarning = _format_warning
    try:
        cli.main(args=argv, prog_name="onnxprune", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("onnxprune: aborted", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"onnxprune: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except OnnxPruneError as exc:
        if debug:
            raise
        click.echo(f"onnxprune: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("onnxprune: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: one line unless --debug
        if debug:
            raise
        click.echo(f"onnxprune: internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)",
                   err=True)
        sys.exit(EXIT_INTERNAL)


from . import cli_finetune, cli_sensitivity  # noqa: E402,F401  (register their commands)
