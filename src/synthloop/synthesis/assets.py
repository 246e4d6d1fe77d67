"""Resolve and check every input file of a domain before any rendering starts.

Part meshes (and their glob variants), distractor meshes, HDR environment maps, image
textures, material presets and the background source: each problem raises a ``ValueError``
subclass with a one-line message that names the file or key and what would be accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from synthloop.config import DomainConfig, PartSpec
from synthloop.synthesis.backgrounds import IMAGE_EXTENSIONS, get_background_source
from synthloop.synthesis.blender.presets import TEXTURE_PREFIX, check_materials
from synthloop.synthesis.meshes import MESH_EXTENSIONS, MeshError, mesh_info, part_mesh_files

HDRI_EXTENSIONS = (".hdr", ".exr")
STUDIO_HDRIS = "studio"  # Blender's bundled studio lights, found by the worker


class AssetError(ValueError):
    """An input folder or file cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Assets:
    """What a domain's plan may draw from (absolute paths as strings, sorted).

    ``variants[c]``: mesh variants of class ``c``; ``hdris`` empty means Blender's studio
    lights; ``textures`` maps a ``texture:<path>`` material entry to its image files.
    """

    variants: tuple[int, ...]
    distractor_meshes: tuple[str, ...] = ()
    hdris: tuple[str, ...] = ()
    textures: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def mesh_index(self, class_index: int, variant: int) -> int:
        return sum(self.variants[:class_index]) + variant


def _files_in(path: Path, extensions: tuple[str, ...], what: str) -> list[Path]:
    if path.is_file():
        if path.suffix.lower() not in extensions:
            raise AssetError(f"{what} {path}: not one of {', '.join(extensions)}")
        return [path]
    if not path.is_dir():
        raise AssetError(f"{what} {path}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise AssetError(f"{what} folder {path} has no files ({', '.join(extensions)})")
    return files


def _textures(pools: list[list[str]]) -> dict[str, tuple[str, ...]]:
    out = {}
    for pool in pools:
        for entry in pool:
            if entry.startswith(TEXTURE_PREFIX) and entry not in out:
                path = Path(entry[len(TEXTURE_PREFIX):]).expanduser().resolve()
                out[entry] = tuple(str(p) for p in _files_in(path, IMAGE_EXTENSIONS, "texture"))
    return out


def _hdris(spec: str) -> tuple[str, ...]:
    if spec == STUDIO_HDRIS:
        return ()
    path = Path(spec).expanduser()
    if not path.exists():
        raise AssetError(f"hdris '{spec}': not a folder or file; use '{STUDIO_HDRIS}' "
                         f"(Blender's studio lights) or a folder of .hdr/.exr files")
    return tuple(str(p.resolve()) for p in _files_in(path, HDRI_EXTENSIONS, "hdri"))


def _distractor_meshes(paths: list[Path]) -> tuple[str, ...]:
    out = []
    for path in paths:
        for f in _files_in(Path(path).expanduser(), MESH_EXTENSIONS, "distractor mesh"):
            mesh_info(f)
            out.append(str(f.resolve()))
    return tuple(out)


def _check_ranges(domain: DomainConfig) -> None:
    if domain.parts_per_image.min < 1:
        raise AssetError("parts_per_image.min must be >= 1")
    if domain.distractors.min < 0 or domain.point_lights.min < 0:
        raise AssetError("distractors.min and point_lights.min must be >= 0")
    for name in ("camera_distance", "focal_length_mm"):
        if getattr(domain, name).min <= 0:
            raise AssetError(f"{name}.min must be > 0, got {getattr(domain, name).min}")
    if domain.workbench.table_size_m.min <= 0:
        raise AssetError("workbench.table_size_m.min must be > 0")


def resolve_assets(domain: DomainConfig, parts: list[PartSpec]) -> Assets:
    """Check every input of ``domain`` and ``parts``; return what the plan draws from.

    Does not touch Blender and writes nothing (procedural parts count as one variant, ``cad``
    parts one per size).
    """
    if not parts:
        raise AssetError("no parts given")
    _check_ranges(domain)
    check_materials(domain.materials)
    check_materials(domain.distractor_materials, what="distractor material")
    pools = [domain.materials, domain.distractor_materials]
    variants = []
    for part in parts:
        if part.materials is not None:
            check_materials(part.materials, what=f"part '{part.name}' material")
            pools.append(part.materials)
        if part.procedural is not None:
            variants.append(1)
            continue
        if part.cad is not None:  # generated when rendering; sizes were checked by the config
            variants.append(len(part.cad.sizes))
            continue
        files = part_mesh_files(part)
        for f in files:
            if f.suffix.lower() in (".step", ".stp", ".iges", ".igs"):  # tessellated later
                if not f.is_file():
                    raise AssetError(f"part '{part.name}': CAD file {f} not found")
                continue
            mesh_info(f)
        variants.append(len(files))
    get_background_source(domain.backgrounds)
    try:
        return Assets(variants=tuple(variants),
                      distractor_meshes=_distractor_meshes(domain.distractor_meshes),
                      hdris=_hdris(domain.hdris), textures=_textures(pools))
    except MeshError as exc:
        raise AssetError(str(exc)) from None
