"""``synthloop cad``: parametric CAD as a command (registered by cli.py).

``synthloop cad fastener hex-bolt M10x60 --out meshes/`` writes ``meshes/hex_bolt_M10x60.stl``:
a closed mesh in millimetres. Pipelines can name the same parts without files (``cad:`` in a
part of the YAML); the render stage then generates them into the workspace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from synthloop.cli_options import ConfigOpt, OverlayOpt, SetOpt, WorkspaceOpt, load_or_exit
from synthloop.synthesis.fasteners import KINDS, known_sizes

cad_app = typer.Typer(no_args_is_help=True, add_completion=False,
                      help="Generate part CAD from parameters (closed STL meshes, millimetres), "
                           "inspect a STEP/IGES file (unit, named solids, sizes), or retrain "
                           "after a CAD change (re-render that part's images, fine-tune, gate).")

FASTENER_HELP = f"""Write ISO-like fastener meshes as binary STL, one file per size, in millimetres.

Each mesh is one closed solid (watertight, wound outward) on the z axis: a bolt's head spans
z 0..k and its shank z -L..0; a washer lies on z = 0. No threads or chamfers.

Kinds and sizes:

- hex-bolt (ISO 4017-like: hex head across flats s, head height k, plain shank d x L):
{known_sizes("hex-bolt")}

- washer (ISO 7089-like: inner diameter d1, outer d2, thickness h): {known_sizes("washer")}

Examples: synthloop cad fastener hex-bolt M10x40 M10x60 --out meshes/;
synthloop cad fastener washer M8 M10 --out meshes/

In a pipeline YAML a part can name them without files:
cad: {{fastener: hex-bolt, sizes: [M10x40, M10x60]}}
"""


@cad_app.command(help=FASTENER_HELP)
def fastener(kind: str = typer.Argument(..., help=f"One of: {', '.join(KINDS)}."),
             sizes: list[str] = typer.Argument(..., help="One or more sizes, e.g. M10x60 "
                                                         "(hex-bolt) or M8 (washer)."),
             out: Path = typer.Option(Path("."), "--out", "-o", help="Folder for the STL files "
                                      "(made if missing)."),
             threads: str = typer.Option("none", "--threads", help="hex-bolt only: none "
                                         "(plain shank), full (threaded up to the head) or iso "
                                         "(ISO 4014: 2d+6 mm from the tip); V grooves of the "
                                         "ISO coarse pitch."),
             quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the paths.")
             ) -> None:
    import numpy as np

    from synthloop.synthesis.fasteners import (THREADS, FastenerError, fastener_dimensions,
                                               write_fastener)
    from synthloop.synthesis.meshes import read_stl

    try:
        dims = [fastener_dimensions(kind, size) for size in sizes]  # all checked before writing
        if threads not in THREADS:
            raise FastenerError(f"unknown --threads {threads!r} (known: {', '.join(THREADS)})")
        if threads != "none" and kind != "hex-bolt":
            raise FastenerError(f"--threads {threads}: only hex-bolt parts have threads")
    except FastenerError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    for size, dim in zip(sizes, dims):
        path = write_fastener(kind, size, out, threads)
        if quiet:
            typer.echo(str(path))
            continue
        tri = read_stl(path).astype(np.float64)
        extent = tri.reshape(-1, 3).max(0) - tri.reshape(-1, 3).min(0)
        volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
        params = ", ".join(f"{k} {v:g}" for k, v in dim.items())
        if kind == "hex-bolt":
            params += f", threads {threads}"
        typer.echo(f"{path}: {kind} {size} ({params} mm), box "
                   f"{' x '.join(f'{e:.2f}' for e in extent)} mm, volume {volume:.1f} mm^3, "
                   f"{len(tri)} triangles")


@cad_app.command(help="Show what a STEP/IGES file holds: its length unit (read from the file) "
                      "and each named solid's size in millimetres and metres. The names are "
                      "what `solid:` (or synthloop init --assembly per-solid) uses.")
def inspect(path: Path = typer.Argument(..., help="A .step/.stp/.iges/.igs file.")) -> None:
    from synthloop.synthesis.cad_import import CadImportError, read_cad, tessellate

    try:
        cad = read_cad(path)
        rows = []
        for solid in cad.solids:
            tri = tessellate(solid.shape, linear_deflection_mm=0.5, angular_deflection_deg=30)
            flat = tri.reshape(-1, 3)
            rows.append((solid.name, flat.max(0) - flat.min(0)))
    except CadImportError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{path}: unit {cad.unit} ({cad.unit_m:g} m), {len(rows)} solid(s)")
    for name, extent in rows:
        typer.echo(f"  {name}: {' x '.join(f'{v:.4g}' for v in extent)} mm = "
                   f"{' x '.join(f'{v / 1000:.4g}' for v in extent)} m")
    if len(cad.names) > 1:
        typer.echo("one class per named solid: synthloop init --assembly per-solid, or "
                   "`solid: <name>` on a part")


RETRAIN_HELP = """Answer a changed CAD file now (what the `cad-retrain` deployment does on
`synthloop.cad.changed`): compare each part's mesh hash with the champion's lineage, re-render
only the synthetic images that show a changed part (same plans and seeds, new mesh; the others
stay untouched), version the set with DVC, fine-tune the champion on all renders plus the real
labels so far, evaluate on the fixed val set and gate as usual.

--dry-run prints what changed and which renders would be redone, and changes nothing.
Rerunning resumes; the same CAD revision is never trained twice.
`cad_retrain.enabled: false` in the pipeline turns it off."""


@cad_app.command(help=RETRAIN_HELP)
def retrain(config: Path = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
            overlay: list[Path] = OverlayOpt, set_: list[str] = SetOpt,
            dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be "
                                         "re-rendered; change nothing.")) -> None:
    import json

    from synthloop.log_setup import setup_logging

    setup_logging(False)
    cfg = load_or_exit(config, overlay, set_, workspace)
    if not (cfg.workspace / "data" / "synthetic" / "annotations.json").is_file() and not dry_run:
        typer.secho(f"error: no rendered synthetic set in {cfg.workspace}: run the pipeline "
                    "first (synthloop demo / synthloop cycle)", fg="red", err=True)
        raise typer.Exit(2)
    if dry_run:
        from mlflow import MlflowClient

        from synthloop import tracking
        from synthloop.stages.cad_retrain import stems_to_rerender
        from synthloop.stages.monitor import cad_changed

        tracking.setup(cfg)
        changed = cad_changed(cfg, MlflowClient())
        stems = stems_to_rerender(cfg, changed) if changed else []
        typer.echo(json.dumps({"changed": {p: list(h) for p, h in changed.items()},
                               "rerender": stems}, indent=1))
        return
    from synthloop.stages import cad_retrain as stage

    result = stage.run(cfg, trigger="cli", progress=True)
    typer.echo(json.dumps(result, indent=1, default=str))
