"""STEP parts the tests make with the same binding the importer uses (cadquery-ocp-novtk)."""

from pathlib import Path


def box(x_mm: float, y_mm: float, z_mm: float):
    from OCP.BRepPrimAPI import BRepPrimAPI_MakeBox

    return BRepPrimAPI_MakeBox(x_mm, y_mm, z_mm).Shape()


def bolt(*, head_d: float = 16.0, head_h: float = 6.0, d: float = 10.0, length: float = 40.0):
    """A round-headed bolt on the z axis (millimetres): head z 0..head_h, shank z -length..0."""
    from OCP.BRepAlgoAPI import BRepAlgoAPI_Fuse
    from OCP.BRepPrimAPI import BRepPrimAPI_MakeCylinder
    from OCP.gp import gp_Ax2, gp_Dir, gp_Pnt

    head = BRepPrimAPI_MakeCylinder(gp_Ax2(gp_Pnt(0, 0, 0), gp_Dir(0, 0, 1)), head_d / 2, head_h)
    shank = BRepPrimAPI_MakeCylinder(gp_Ax2(gp_Pnt(0, 0, -length), gp_Dir(0, 0, 1)), d / 2, length)
    return BRepAlgoAPI_Fuse(head.Shape(), shank.Shape()).Shape()


def washer(*, x: float = 60.0, d1: float = 10.0, d2: float = 20.0, h: float = 2.0):
    """A flat ring centred at (x, 0) on z = 0..h (millimetres)."""
    from OCP.BRepAlgoAPI import BRepAlgoAPI_Cut
    from OCP.BRepPrimAPI import BRepPrimAPI_MakeCylinder
    from OCP.gp import gp_Ax2, gp_Dir, gp_Pnt

    outer = BRepPrimAPI_MakeCylinder(gp_Ax2(gp_Pnt(x, 0, 0), gp_Dir(0, 0, 1)), d2 / 2, h)
    inner = BRepPrimAPI_MakeCylinder(gp_Ax2(gp_Pnt(x, 0, -1), gp_Dir(0, 0, 1)), d1 / 2, h + 2)
    return BRepAlgoAPI_Cut(outer.Shape(), inner.Shape()).Shape()


def write_inch_bracket(path: Path) -> Path:
    """A 2 x 1 x 0.5 inch block written with INCH units (the file's numbers: 2, 1, 0.5)."""
    from synthloop.synthesis.cad_import import write_step

    return write_step(path, {"bracket": box(2 * 25.4, 1 * 25.4, 0.5 * 25.4)}, unit="inch")


def write_assembly(path: Path) -> Path:
    """Two named solids, ``bolt`` (16 x 16 x 46 mm) and ``washer`` (20 x 20 x 2 mm), in mm."""
    from synthloop.synthesis.cad_import import write_step

    return write_step(path, {"bolt": bolt(), "washer": washer()}, unit="mm")
