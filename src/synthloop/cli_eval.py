"""`synthloop evaluate`: COCO metrics, PR curves and overlays of any detector on any labelled
photo folder (registered by cli.py; the work is in ``synthloop.stages.evaluate``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn, Optional

import typer

from synthloop.cli_options import (DEFAULT_CONFIG, OverlayOpt, SetOpt, WorkspaceOpt,
                                   load_or_exit)
from synthloop.log_setup import setup_logging


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def _registry_config(config: Optional[Path], overlay: list[Path], set_: list[str],
                     workspace: Optional[Path], needs_registry: bool):
    """The pipeline config when given, or the default pipeline's when the model is in its
    registry; None for a checkpoint file without --config."""
    if config is None and needs_registry and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    return None if config is None else load_or_exit(config, overlay, set_, workspace)


def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="champion | challenger | vN | an MLflow "
                              "run id (registry of --config) | a checkpoint path."),
    data: Path = typer.Option(..., "--data", "-d", help="Labelled photos: a YOLO folder (images/ + "
                              "labels/ + classes.txt or data.yaml) or a COCO folder/json."),
    class_map: list[str] = typer.Option([], "--class-map", help="Data class -> model class: "
                                        "Bolt=hex_bolt, or Bottle=null to drop a class "
                                        "(repeatable, comma-separated, or a YAML file)."),
    fmt: str = typer.Option("auto", "--format", help="auto | yolo | coco"),
    unlabelled_as_background: bool = typer.Option(
        False, "--unlabelled-as-background", help="Count images without a label file (YOLO) or "
        "not in the json (COCO) as photos without objects instead of failing."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: "
                                       "evaluation/<model>_<data folder>)."),
    examples: int = typer.Option(4, "--examples", min=0, help="Images to draw overlays for."),
    min_score: float = typer.Option(0.3, "--min-score", min=0.0, max=1.0,
                                    help="Lowest detection score drawn on the overlays."),
    batch_size: int = typer.Option(2, "--batch-size", min=1, help="Images per forward pass."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N "
                                         "(default: runtime.device of --config, else auto: the "
                                         "GPU when torch sees one)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML whose "
                                          "registry holds the model (default pipelines/demo.yaml "
                                          "for registry models); its part names name the classes "
                                          "of checkpoints that carry none."),
    workspace: Optional[Path] = WorkspaceOpt,
    overlay: list[Path] = OverlayOpt,
    set_: list[str] = SetOpt,
) -> None:
    """COCO AP, AP50, AP75 and per-class AP of a model on a labelled photo folder, with a PR
    plot and detections drawn over the ground truth (no pipeline workspace needed for the data).
    """
    from synthloop.stages.evaluate import (
        evaluate_folder,
        format_table,
        load_labelled_folder,
        parse_class_map,
    )
    from synthloop.stages.model_source import load_model_under_test, spec_needs_registry

    setup_logging(False)
    try:
        labelled = load_labelled_folder(data, fmt=fmt,
                                        unlabelled_as_background=unlabelled_as_background)
        mapping = parse_class_map(class_map)
        cfg = _registry_config(config, overlay, set_, workspace, spec_needs_registry(model))
        from synthloop.detection.device import resolve_device

        runs_on = resolve_device(device or (cfg.runtime.device if cfg is not None else "auto"))
        loaded = load_model_under_test(model, cfg=cfg, device=runs_on)
        out = out or Path("evaluation") / f"{loaded.label}_{Path(data).resolve().name}"
        _print_header(loaded, labelled)
        report = evaluate_folder(model=loaded, data=labelled, out=out, class_map=mapping,
                                 batch_size=batch_size, overlays=examples,
                                 overlay_min_score=min_score)
    except (ValueError, FileNotFoundError) as exc:  # bad input: one line, no traceback
        if os.environ.get("SYNTHLOOP_DEBUG"):
            raise
        _fail(str(exc))
    typer.echo(format_table(report))
    if report.dropped:
        typer.echo("dropped by --class-map: " + ", ".join(f"{n} ({c} boxes)"
                                                         for n, c in report.dropped.items()))
    typer.echo(f"wrote {report.metrics_path}, {report.pr_plot.name}, "
               f"{len(report.overlays)} overlay(s) in {report.metrics_path.parent}/overlays")


def _print_header(loaded, labelled) -> None:
    d = loaded.details
    where = {"registry": lambda: f"{d['registered_model']} v{d['version']} (run {d['run_id']})",
             "run": lambda: f"run {d['run_id']}",
             "checkpoint": lambda: d["checkpoint"]}[d["source"]]()
    typer.echo(f"model: {loaded.label}: {where}; classes {list(loaded.class_names)}; "
               f"input resized to min_size {d['min_size']}, max_size {d['max_size']} (its own)")
    extra = (f", {len(labelled.background)} without labels counted as background"
             if labelled.background else "")
    typer.echo(f"data:  {labelled.path} ({labelled.fmt.upper()}, {len(labelled.ds.images)} images"
               f", {len(labelled.ds.annotations)} boxes{extra})")
