"""``onnxprune finetune`` and the finetuning options ``onnxprune prune --finetune`` shares."""

from __future__ import annotations

import json

import click

from .cli import _check_outputs, _image_options, _input_shapes, cli, image_options, input_shape_option
from .cli_finetune_options import finetune_options, options_from

def summary_line(rep: dict) -> str:
    before, best = rep.get("before") or {}, rep.get("best") or {}
    agree = ""
    if "agreement" in before:
        agree = f", held-out agreement {before['agreement']:.3f} -> {best.get('agreement', 0):.3f}"
    return (f"finetune  {rep['steps']} steps in {rep['seconds']:.0f} s ({rep['trainable_parameters']:,} weights), "
            f"held-out loss {before.get('loss', float('nan')):.4g} -> {best.get('loss', float('nan')):.4g}{agree}"
            + (f"; stopped: {rep['stopped_early']}" if rep.get("stopped_early") else ""))


@cli.command("finetune")
@click.argument("dense", type=click.Path())
@click.argument("pruned", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Where to write the finetuned model.")
@click.option("--data", "data", required=True, metavar="DATA",
              help="Training samples (.npz, a folder of .npz/.npy, images:DIR); labels are not needed.")
@click.option("--labels", help="Array in the data holding class labels (used with --labels-weight).")
@click.option("--plan", "plan_path", type=click.Path(), help="The pruning plan (prune --plan-out): lets feature "
              "distillation compare pruned residual streams on the channels they kept.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@finetune_options
@input_shape_option
@image_options
@click.option("--report", "report_path", type=click.Path(), help="Write the JSON report here.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success (and no progress).")
def finetune_cmd(dense, pruned, output, data, labels, plan_path, batch_size, seed, device, input_shape, image_size,
                 mean, std, layout, channel_order, report_path, as_json, quiet, **kwargs):
    """Distil PRUNED toward DENSE on DATA and write the trained model to OUTPUT."""
    from .finetune import finetune
    from .model import save_model, write_text_atomic

    _check_outputs(pruned, output, report_path)
    _check_outputs(dense, output, report_path)
    options = options_from(kwargs, batch_size, seed, device)
    kept = _kept_from_plan(dense, plan_path, _input_shapes(input_shape)) if plan_path else None
    result = finetune(dense, pruned, data, options, kept=kept, labels=labels,
                      image_options=_image_options(image_size, mean, std, layout, channel_order),
                      input_shapes=_input_shapes(input_shape), progress=False if (quiet or as_json) else None)
    from .model import load_model
    from .verify import io_signature, verify_model

    verify_model(io_signature(load_model(pruned, check=False)), result.model, _input_shapes(input_shape))
    save_model(result.model, output)
    if report_path:
        write_text_atomic(report_path, json.dumps(result.report, indent=1, default=str))
    if as_json:
        click.echo(json.dumps(result.report, indent=1, default=str))
    elif not quiet:
        click.echo(summary_line(result.report))
        click.echo(f"wrote   {output}")


def _kept_from_plan(dense: str, plan_path: str, input_shapes):
    from .api import _analysis
    from .finetune.features import kept_tensors
    from .model import load_model
    from .plan import Plan

    try:
        text = open(plan_path, encoding="utf-8").read()
    except OSError as exc:
        from .errors import InputError

        raise InputError(f"{plan_path}: cannot read the plan ({exc.strerror})") from None
    plan = Plan.from_json(text)
    analysis = _analysis(load_model(dense), input_shapes, bool(plan.settings.get("prune_norm_spaces", False)),
                         in_place=True, head_mode=plan.settings.get("head_mode", "heads"))
    return kept_tensors(analysis, plan)
