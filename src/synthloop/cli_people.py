"""`synthloop label export|import|status` and `synthloop serve` (registered by cli.py).

Labelling is the step where the oracle is a person; serving is where the champion meets them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from synthloop.cli_options import ConfigOpt, OverlayOpt, SetOpt, WorkspaceOpt, load_or_exit
from synthloop.log_setup import setup_logging

label_app = typer.Typer(no_args_is_help=True, help="Human labelling round trip: export a query "
                        "batch with pre-annotations, import the answers strictly, show status.")



def _cfg(config: Path, overlay: list[Path], set_: list[str], workspace: Optional[Path]):
    setup_logging(False)
    return load_or_exit(config, overlay, set_, workspace)


@label_app.command("export")
def label_export(cycle: int = typer.Option(..., "--cycle", help="The cycle whose query batch to export."),
                 tool: Optional[str] = typer.Option(None, help="labelstudio | cvat (default: "
                                                    "labeling.oracle)"),
                 force: bool = typer.Option(False, help="Export again even if already exported."),
                 config: Path = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
                 overlay: list[Path] = OverlayOpt, set_: list[str] = SetOpt) -> None:
    """Write the cycle's unlabelled query images with the model's boxes as pre-annotations."""
    from synthloop.stages.label_human import export_batch, export_folder

    cfg = _cfg(config, overlay, set_, workspace)
    manifest = export_batch(cfg, cycle, tool=tool, force=force)
    folder = export_folder(cfg, cycle)
    typer.echo(f"cycle {cycle}: {len(manifest.images)} images, {len(manifest.preannotations)} "
               f"pre-annotations (model v{manifest.model_version}) -> {folder}")
    if manifest.tool == "labelstudio":
        typer.echo(f"  Label Studio: new project, labelling config {folder}/labelstudio/label_config.xml,"
                   f" import {folder}/labelstudio/tasks.json; export JSON when done")
    else:
        typer.echo(f"  CVAT: new task with the images in {folder}/cvat/images, then Upload "
                   f"annotations > COCO 1.0 > {folder}/cvat/cvat_preannotations_coco.zip; "
                   "export the task dataset as COCO 1.0 when done")
    typer.echo(f"  then: synthloop label import --cycle {cycle} FILE")


@label_app.command("import")
def label_import(file: Path = typer.Argument(..., help="Label Studio JSON export, or CVAT COCO 1.0 "
                                             "(json or zip)."),
                 cycle: int = typer.Option(..., "--cycle", help="The cycle the batch belongs to."),
                 fmt: str = typer.Option("auto", "--format", help="auto | labelstudio | cvat"),
                 config: Path = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
                 overlay: list[Path] = OverlayOpt, set_: list[str] = SetOpt) -> None:
    """Validate finished annotations strictly (all or nothing) and keep them for the cycle."""
    from synthloop.data.label_import import LabelImportError
    from synthloop.stages.label_human import import_answers

    cfg = _cfg(config, overlay, set_, workspace)
    try:
        rec = import_answers(cfg, cycle, file, tool=fmt)
    except LabelImportError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    share = rec["savings"]["accepted_share"]
    typer.echo(f"cycle {cycle}: {len(rec['returned'])} images back with {rec['boxes']} boxes; "
               f"{len(rec['skipped'])} skipped and {len(rec['pending'])} pending stay in the pool")
    typer.echo("pre-annotations accepted unchanged: "
               + ("n/a" if share is None else f"{share:.0%} of the boxes"))
    typer.echo("next: synthloop cycle (the label stage adds these and the cycle goes on)")


@label_app.command("status")
def label_status(config: Path = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
                 overlay: list[Path] = OverlayOpt, set_: list[str] = SetOpt) -> None:
    """What waits for labels, what came back, and what each cycle's labels cost."""
    from synthloop.stages.label_human import format_status, status

    typer.echo(format_status(status(_cfg(config, overlay, set_, workspace))))


def serve(config: Path = ConfigOpt, host: Optional[str] = typer.Option(None, help="Default: serve.host."),
          port: Optional[int] = typer.Option(None, help="Default: serve.port."),
          workspace: Optional[Path] = WorkspaceOpt, overlay: list[Path] = OverlayOpt,
          set_: list[str] = SetOpt) -> None:
    """REST inference with the registry champion; swaps to a new champion without a restart."""
    from synthloop.serve.app import serve as run_server

    run_server(_cfg(config, overlay, set_, workspace), host=host, port=port)
