"""STEP and IGES parts: read with OpenCascade, tessellate, cache the mesh as an STL in millimetres.

The binding is ``cadquery-ocp-novtk`` (``pip install 'synthloop[cad]'``): the official OCP
wrapper of OpenCascade without VTK, imported only here and only when a CAD file is used.

- Units come from the file: STEP's length unit (``SI_UNIT(.MILLI.,.METRE.)``,
  ``CONVERSION_BASED_UNIT('INCH', ...)``) or IGES's global-section unit. OpenCascade converts
  the geometry to millimetres on transfer, so the cached STL is always in millimetres. A part's
  explicit ``unit`` overrides a file whose header is wrong: the file's numbers are then read in
  that unit.
- Tessellation: ``BRepMesh_IncrementalMesh`` with a linear deflection (mm, chord height) and
  an angular deflection (degrees), both from the part's ``tessellation`` config.
- Assemblies: every solid of the file as one part (``solid: null``), or one named solid
  (``solid: <name>``; instances of the same name are one class, the first instance is used).
  Names come from the file's product / component names (XCAF); an unnamed solid is
  ``<file stem>_<n>``.
- The tessellation is cached under ``cache_root/<key>/`` where the key hashes the file's bytes,
  the solid, the tolerances, the unit override and ``IMPORTER_VERSION``: a changed file or
  setting lands in a new folder, a rerun reads nothing but the hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthloop.synthesis.mesh_io import UNIT_SCALE, MeshError, check_solid, write_stl

CAD_EXTENSIONS = (".step", ".stp", ".iges", ".igs")
IMPORTER_VERSION = 1
KNOWN_UNITS_M = {"mm": 0.001, "cm": 0.01, "m": 1.0, "inch": 0.0254, "ft": 0.3048, "um": 1e-6}


class CadImportError(MeshError):
    """A CAD file cannot be read, has no solid, or lacks the named solid; says which file."""


def is_cad_file(path: Path | str) -> bool:
    return Path(str(path)).suffix.lower() in CAD_EXTENSIONS


def unit_name(metres: float) -> str:
    """The name of a length unit given in metres (``inch`` for 0.0254), or ``'<x> m'``."""
    for name, value in KNOWN_UNITS_M.items():
        if math.isclose(metres, value, rel_tol=1e-6):
            return name
    return f"{metres:g} m"


@dataclass(frozen=True)
class CadSolid:
    name: str
    shape: object  # TopoDS_Shape, placed in the file's frame, millimetres


@dataclass(frozen=True)
class CadFile:
    """A read CAD file: its declared length ``unit`` (name) and ``unit_m`` (metres per file
    unit), and its solids in file order."""

    path: Path
    unit: str
    unit_m: float
    solids: list[CadSolid]

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(s.name for s in self.solids))


def _ocp():
    import importlib.util

    if importlib.util.find_spec("OCP") is None:
        raise CadImportError("STEP/IGES import needs OpenCascade: pip install 'synthloop[cad]' "
                             "(cadquery-ocp-novtk)")
    from OCP.Message import Message

    messenger = Message.DefaultMessenger_s()  # OpenCascade prints transfer statistics: mute them
    for printer in list(messenger.Printers()):
        messenger.RemovePrinter(printer)


# ---------------------------------------------------------------------------------- units
_SI_PREFIX_M = {"Milli": 1e-3, "Centi": 1e-2, "Deci": 1e-1, "Micro": 1e-6, "Kilo": 1e3,
                "Nano": 1e-9}


def _si_metres(unit) -> float:
    prefix = str(unit.Prefix()).rsplit("_sp", 1)[-1] if unit.HasPrefix() else ""
    return _SI_PREFIX_M.get(prefix, 1.0)


def _step_unit(model) -> float | None:
    """Metres per length unit of a STEP model: a conversion-based unit (INCH, FOOT) wins over
    the SI unit it is defined by."""
    from OCP.StepBasic import (StepBasic_ConversionBasedUnitAndLengthUnit,
                               StepBasic_SiUnitAndLengthUnit)

    si, conv = None, None
    for i in range(1, model.NbEntities() + 1):
        ent = model.Value(i)
        if isinstance(ent, StepBasic_ConversionBasedUnitAndLengthUnit) and conv is None:
            factor = ent.ConversionFactor()
            base = factor.UnitComponent().NamedUnit()
            base_m = _si_metres(base) if isinstance(base, StepBasic_SiUnitAndLengthUnit) else 1e-3
            conv = float(factor.ValueComponent()) * base_m
            by_name = {"INCH": 0.0254, "FOOT": 0.3048}.get(ent.Name().ToCString().upper())
            if by_name and not math.isclose(conv, by_name, rel_tol=1e-3):
                conv = by_name  # a factor given in an unexpected base: trust the name
        elif isinstance(ent, StepBasic_SiUnitAndLengthUnit) and si is None:
            si = _si_metres(ent)
    return conv if conv is not None else si


def _iges_unit(model) -> float | None:
    flag = model.GlobalSection().UnitFlag()  # IGES: 1 inch, 2 mm, 4 ft, 6 m, 10 cm, ...
    return {1: 0.0254, 2: 0.001, 4: 0.3048, 5: 1609.344, 6: 1.0, 7: 1000.0, 8: 2.54e-5,
            9: 1e-6, 10: 0.01, 11: 2.54e-8}.get(int(flag))


# ---------------------------------------------------------------------------------- reading
def _label_name(label) -> str | None:
    from OCP.TDataStd import TDataStd_Name

    attr = TDataStd_Name()
    if label.FindAttribute(TDataStd_Name.GetID_s(), attr):
        text = attr.Get().ToExtString().strip()
        return text or None
    return None


def _walk(tool, label, loc, name: str | None, out: list) -> None:
    from OCP.OCP.collections import Sequence_TDF_Label
    from OCP.TDF import TDF_Label
    from OCP.XCAFDoc import XCAFDoc_ShapeTool

    if XCAFDoc_ShapeTool.IsAssembly_s(label):
        comps = Sequence_TDF_Label()
        XCAFDoc_ShapeTool.GetComponents_s(label, comps, False)
        for i in range(1, comps.Length() + 1):
            comp, ref = comps.Value(i), TDF_Label()
            XCAFDoc_ShapeTool.GetReferredShape_s(comp, ref)
            sub = loc.Multiplied(XCAFDoc_ShapeTool.GetLocation_s(comp))
            _walk(tool, ref, sub, _label_name(ref) or _label_name(comp), out)
        return
    out.append((name or _label_name(label), XCAFDoc_ShapeTool.GetShape_s(label).Moved(loc)))


def _solids(shape) -> list:
    from OCP.TopAbs import TopAbs_SOLID
    from OCP.TopExp import TopExp_Explorer

    found, explorer = [], TopExp_Explorer(shape, TopAbs_SOLID)
    while explorer.More():
        found.append(explorer.Current())
        explorer.Next()
    return found


def read_cad(path: Path | str) -> CadFile:
    """Read a STEP or IGES file: its unit and its solids (named, placed, in millimetres).

    Raises ``CadImportError`` naming the file if it cannot be read or holds no solid.
    """
    path = Path(path)
    if not is_cad_file(path):
        raise CadImportError(f"{path}: not a STEP/IGES file ({', '.join(CAD_EXTENSIONS)})")
    if not path.is_file():
        raise CadImportError(f"{path}: file not found")
    _ocp()
    from OCP.IFSelect import IFSelect_RetDone
    from OCP.OCP.collections import Sequence_TDF_Label
    from OCP.TCollection import TCollection_ExtendedString
    from OCP.TDocStd import TDocStd_Document
    from OCP.TopLoc import TopLoc_Location
    from OCP.XCAFDoc import XCAFDoc_DocumentTool

    step = path.suffix.lower() in (".step", ".stp")
    if step:
        from OCP.STEPCAFControl import STEPCAFControl_Reader as Reader
    else:
        from OCP.IGESCAFControl import IGESCAFControl_Reader as Reader
    reader = Reader()
    reader.SetNameMode(True)
    if reader.ReadFile(str(path)) != IFSelect_RetDone:
        raise CadImportError(f"{path}: OpenCascade cannot read it (not a valid "
                             f"{'STEP' if step else 'IGES'} file)")
    model = reader.Reader().StepModel() if step else reader.IGESModel()
    unit_m = (_step_unit if step else _iges_unit)(model)
    doc = TDocStd_Document(TCollection_ExtendedString("MDTV-XCAF"))
    if not reader.Transfer(doc):
        raise CadImportError(f"{path}: OpenCascade read it but transferred no shape")
    tool = XCAFDoc_DocumentTool.ShapeTool_s(doc.Main())
    roots = Sequence_TDF_Label()
    tool.GetFreeShapes(roots)
    shapes: list = []
    for i in range(1, roots.Length() + 1):
        _walk(tool, roots.Value(i), TopLoc_Location(), None, shapes)
    solids, counter = [], 0
    for name, shape in shapes:
        for k, solid in enumerate(_solids(shape)):
            counter += 1
            label = name or f"{path.stem}_{counter}"
            solids.append(CadSolid(label if k == 0 or not name else f"{label}_{k + 1}", solid))
    if not solids:
        raise CadImportError(f"{path}: no solid in the file (surfaces only?): export the part "
                             "as a solid body")
    if unit_m is None:
        unit_m = 0.001
    return CadFile(path, unit_name(unit_m), unit_m, solids)


# ----------------------------------------------------------------------------- tessellation
def tessellate(shape, *, linear_deflection_mm: float,
               angular_deflection_deg: float) -> np.ndarray:
    """Triangles of ``shape``: (F, 3, 3) float64 millimetres, wound outward (face orientation)."""
    from OCP.BRep import BRep_Tool
    from OCP.BRepMesh import BRepMesh_IncrementalMesh
    from OCP.TopAbs import TopAbs_FACE, TopAbs_REVERSED
    from OCP.TopExp import TopExp_Explorer
    from OCP.TopLoc import TopLoc_Location
    from OCP.TopoDS import TopoDS

    BRepMesh_IncrementalMesh(shape, float(linear_deflection_mm), False,
                             math.radians(angular_deflection_deg), False)
    chunks = []
    explorer = TopExp_Explorer(shape, TopAbs_FACE)
    while explorer.More():
        face = TopoDS.Face(explorer.Current())
        loc = TopLoc_Location()
        tri = BRep_Tool.Triangulation_s(face, loc)
        explorer.Next()
        if tri is None:
            continue
        trsf = loc.Transformation()
        nodes = np.array([tri.Node(i).Transformed(trsf).Coord() for i in range(1, tri.NbNodes() + 1)])
        idx = np.array([tri.Triangle(i).Get() for i in range(1, tri.NbTriangles() + 1)]) - 1
        if face.Orientation() == TopAbs_REVERSED:
            idx = idx[:, ::-1]
        chunks.append(nodes[idx])
    if not chunks:
        raise CadImportError("tessellation produced no triangles")
    return np.concatenate(chunks)


def file_digest(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "part"


def import_cad(path: Path | str, cache_root: Path | str, *, solid: str | None = None,
               linear_deflection_mm: float = 0.05, angular_deflection_deg: float = 15.0,
               unit: str = "auto") -> dict:
    """Tessellate a CAD file (or one named ``solid``) into a cached, checked STL in millimetres.

    ``unit='auto'`` trusts the file's unit; another name reads the file's numbers in that unit.
    Returns ``{"stl", "file_unit", "unit_used", "extent_mm", "triangles", "solids", "cached"}``.
    """
    path = Path(path)
    if not path.is_file():
        raise CadImportError(f"{path}: file not found")
    settings = {"v": IMPORTER_VERSION, "file": file_digest(path), "solid": solid,
                "linear_mm": float(linear_deflection_mm),
                "angular_deg": float(angular_deflection_deg), "unit": unit}
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_root) / key
    stl, meta_path = folder / f"{_safe(solid or path.stem)}.stl", folder / "import.json"
    if stl.is_file() and meta_path.is_file():
        return {**json.loads(meta_path.read_text()), "stl": str(stl), "cached": True}
    cad = read_cad(path)
    chosen = cad.solids if solid is None else [s for s in cad.solids if s.name == solid][:1]
    if not chosen:
        raise CadImportError(f"{path}: no solid named {solid!r}; its solids: "
                             f"{', '.join(cad.names)}")
    tri = np.concatenate([tessellate(s.shape, linear_deflection_mm=linear_deflection_mm,
                                     angular_deflection_deg=angular_deflection_deg)
                          for s in chosen])
    if unit != "auto":  # the file's numbers, read in the unit the user says they are in
        tri = tri / (cad.unit_m * 1000.0) * (UNIT_SCALE[unit] * 1000.0)
    check_solid(path, tri)
    flat = tri.reshape(-1, 3)
    faces = np.arange(len(flat)).reshape(-1, 3)
    folder.mkdir(parents=True, exist_ok=True)
    write_stl(stl, flat, faces)
    meta = {"source": str(path), "file_unit": cad.unit, "file_unit_m": cad.unit_m,
            "unit_used": cad.unit if unit == "auto" else unit, "solid": solid,
            "solids": cad.names, "extent_mm": (flat.max(0) - flat.min(0)).round(4).tolist(),
            "triangles": int(len(tri)), "settings": settings}
    meta_path.write_text(json.dumps(meta, indent=1))
    return {**meta, "stl": str(stl), "cached": False}


def write_step(path: Path | str, solids: dict[str, object], *, unit: str = "mm") -> Path:
    """Write named solids (TopoDS shapes in millimetres) as one STEP assembly in ``unit``
    (``mm``, ``inch``, ``m``, ``cm``); one solid is written as a single named part."""
    _ocp()
    from OCP.Interface import Interface_Static
    from OCP.STEPCAFControl import STEPCAFControl_Writer
    from OCP.STEPControl import STEPControl_AsIs
    from OCP.TCollection import TCollection_ExtendedString
    from OCP.TDataStd import TDataStd_Name
    from OCP.TDocStd import TDocStd_Document
    from OCP.TopLoc import TopLoc_Location
    from OCP.XCAFDoc import XCAFDoc_DocumentTool

    codes = {"mm": "MM", "inch": "INCH", "m": "M", "cm": "CM", "ft": "FT"}
    if unit not in codes:
        raise ValueError(f"write_step: unknown unit {unit!r}; known: {', '.join(codes)}")
    doc = TDocStd_Document(TCollection_ExtendedString("MDTV-XCAF"))
    tool = XCAFDoc_DocumentTool.ShapeTool_s(doc.Main())
    root = tool.NewShape() if len(solids) > 1 else None
    for name, shape in solids.items():
        label = tool.AddShape(shape, False)
        TDataStd_Name.Set_s(label, TCollection_ExtendedString(name))
        if root is not None:
            comp = tool.AddComponent(root, label, TopLoc_Location())
            TDataStd_Name.Set_s(comp, TCollection_ExtendedString(name))
    if root is not None:
        TDataStd_Name.Set_s(root, TCollection_ExtendedString(Path(path).stem))
        tool.UpdateAssemblies()
    writer = STEPCAFControl_Writer()
    writer.SetNameMode(True)
    Interface_Static.SetCVal_s("write.step.unit", codes[unit])
    try:
        if not writer.Transfer(doc, STEPControl_AsIs):
            raise CadImportError(f"{path}: OpenCascade could not transfer the shapes")
        writer.Write(str(path))
    finally:
        Interface_Static.SetCVal_s("write.step.unit", "MM")
    return Path(path)
