"""``synthloop init``: a pipeline for your own part from CAD files and a folder of photos."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from synthloop.synthesis.blender.scenes import DEFAULT as DEFAULT_SCENE, scene_names

_RAW_HELP = """Write a pipeline YAML for your own part(s), render 8 previews and a contact sheet.

From CAD files (STEP/IGES, or STL/OBJ/PLY/glTF meshes) and a folder of camera photos: parts
with their units (a STEP file's own unit; meshes `auto` unless --unit), a scene preset, a camera
distance range fitted to the part sizes (and to the photos' box sizes with --labels), the
photos split into a pool and a fixed validation set, detector defaults for the object size.
Every part's size in metres is printed and checked against the camera: a wrong unit fails here,
with the fix. Nothing is asked unless --interactive.

Example: synthloop init --name bracket --cad bracket.step --labels yolo camera/ --val-fraction 0.2
"""
INIT_HELP = "\n\n".join(" ".join(p.split()) for p in _RAW_HELP.split("\n\n"))


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint=flag)
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def init(name: Optional[str] = typer.Option(None, "--name", help="Pipeline name (letters, "
                                            "digits, _ and -): <out>/<name>.yaml."),
         cad: list[Path] = typer.Option([], "--cad", help="A part's CAD file (repeatable): "
                                        ".step/.stp/.iges/.igs or .stl/.obj/.ply/.glb/.gltf."),
         photos: Optional[Path] = typer.Option(None, "--photos", help="Folder of camera photos "
                                               "(unlabelled), or the images of --labels coco."),
         labels: Optional[tuple[str, Path]] = typer.Option(
             None, "--labels", help="FORMAT PATH: labelled photos, yolo (images/ + labels/) or "
                                    "coco (json, or folder with annotations.json + images/)."),
         val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of labelled "
                                            "photos kept as the fixed validation set."),
         out: Path = typer.Option(Path("."), "--out", "-o", help="Folder for the YAML, photo "
                                  "splits, workspace and contact sheet."),
         unit: list[str] = typer.Option([], "--unit", help="mm|cm|m|inch for every part, or "
                                        "FILE=UNIT for one (repeatable). Default: a STEP/IGES "
                                        "file's own unit; meshes auto."),
         assembly: str = typer.Option("one-part", "--assembly", help="one-part: a STEP "
                                      "assembly is one class; per-solid: one class per named "
                                      "solid."),
         scene: str = typer.Option(DEFAULT_SCENE, "--scene", help="Scene preset: "
                                   f"{' | '.join(scene_names())}."),
         class_map: list[str] = typer.Option([], "--class-map", help="PHOTO_CLASS=PART, or "
                                             "PHOTO_CLASS= to drop (repeatable); photo classes "
                                             "that are no part are dropped anyway."),
         previews: int = typer.Option(8, "--previews", help="Preview renders for the contact "
                                      "sheet (0: none, no Blender)."),
         set_: list[str] = typer.Option([], "--set", help="Set a key of the written YAML, e.g. "
                                        "--set synthetic.num_images=500 (repeatable)."),
         seed: int = typer.Option(0, "--seed", help="Seed of the split and the renders."),
         interactive: bool = typer.Option(False, "--interactive", "-i", help="Ask for what "
                                          "is not given by a flag.")) -> None:
    from synthloop.data.importers import DatasetImportError
    from synthloop.init_project import InitError, InitOptions, init_project, next_commands
    from synthloop.synthesis.meshes import MeshError
    from synthloop.synthesis.render import RenderError
    from synthloop.synthesis.scale_check import ScaleError, format_sizes

    if interactive:
        name = name or typer.prompt("Pipeline name")
        if not cad:
            cad = [Path(p) for p in typer.prompt("CAD files (space separated)").split()]
        if labels is None and photos is None:
            fmt = typer.prompt("Label format of your photos (yolo, coco, none)", default="none")
            where = Path(typer.prompt("Photos folder (or labelled set)"))
            labels, photos = ((fmt, where), None) if fmt != "none" else (None, where)
        if not unit and typer.confirm("Set the unit of the parts yourself?", default=False):
            unit = [typer.prompt("Unit (mm, cm, m, inch)")]
    units = _pairs([u for u in unit if "=" in u], "--unit")
    units.update({"*": u for u in unit if "=" not in u})
    mapping = {k: (v or None) for k, v in _pairs(class_map, "--class-map").items()}
    problems = []
    if not name:
        problems.append("--name is required")
    if photos is None and labels is None:
        problems.append("give --photos and/or --labels")
    if labels is not None and labels[0] not in ("yolo", "coco"):
        problems.append(f"--labels {labels[0]}: format must be yolo or coco")
    if assembly not in ("one-part", "per-solid"):
        problems.append(f"--assembly {assembly}: one-part or per-solid")
    if scene not in scene_names():
        problems.append(f"--scene {scene}: one of {', '.join(scene_names())}")
    bad_units = [u for u in units.values() if u not in ("auto", "mm", "cm", "m", "inch")]
    if bad_units:
        problems.append(f"--unit {bad_units[0]}: one of mm, cm, m, inch, auto")
    if problems:
        typer.secho(f"error: {'; '.join(problems)}", fg="red", err=True)
        raise typer.Exit(2)
    from synthloop.log_setup import setup_logging

    setup_logging(False)  # the render's own lines: part sizes in metres, progress
    opts = InitOptions(name=name, cad=list(cad), out=out, photos=photos, labels=labels,
                       val_fraction=val_fraction, units=units, assembly=assembly, scene=scene,
                       class_map=mapping, previews=previews, overrides=list(set_), seed=seed)
    try:
        result = init_project(opts, render_previews=previews > 0, progress=True)
    except (InitError, ScaleError, MeshError, DatasetImportError, RenderError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_sizes(result.sizes))
    typer.echo(f"camera distance: {result.distance[0]:g}-{result.distance[1]:g} m")
    for w in result.warnings:
        typer.secho(f"warning: {w}", fg="yellow")
    typer.echo(f"pipeline: {result.config}")
    if result.contact_sheet:
        typer.echo(f"contact sheet (previews over photos, boxes drawn): {result.contact_sheet}")
    typer.echo("next:")
    for line in next_commands(result):
        typer.echo(f"  {line}")


init.__doc__ = INIT_HELP
