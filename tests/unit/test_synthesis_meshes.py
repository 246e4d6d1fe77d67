"""The procedural blade is a valid closed STL; bad mesh inputs fail early with the file name."""

from collections import Counter

import numpy as np
import pytest

from synthloop.config import PartSpec
from synthloop.synthesis.meshes import (MeshError, prepare_part_meshes, read_stl, turbine_blade,
                                        validate_mesh, write_stl)


def test_blade_is_closed_and_outward():
    v, f = turbine_blade()
    edges = Counter((int(a), int(b)) for t in f for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])))
    assert all(n == 1 and edges[(b, a)] == 1 for (a, b), n in edges.items())
    tri = v[f]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert volume > 0
    size = v.max(0) - v.min(0)
    assert 0.1 < size[2] < 0.2 and size[0] < 0.1  # metres: a hand-sized part


def test_stl_round_trip(tmp_path):
    v, f = turbine_blade(sections=4, profile_points=6)
    path = write_stl(tmp_path / "b.stl", v, f)
    assert path.stat().st_size == 84 + 50 * len(f)
    np.testing.assert_allclose(read_stl(path), v[f], atol=1e-6)
    assert validate_mesh(path) == path


def test_bad_meshes_name_the_file(tmp_path):
    with pytest.raises(MeshError, match="missing.stl: file not found"):
        validate_mesh(tmp_path / "missing.stl")
    (tmp_path / "empty.stl").write_bytes(b"")
    with pytest.raises(MeshError, match="empty.stl: file is empty"):
        validate_mesh(tmp_path / "empty.stl")
    (tmp_path / "zero.stl").write_bytes(b"\0" * 84)
    with pytest.raises(MeshError, match="zero.stl: STL has no triangles"):
        validate_mesh(tmp_path / "zero.stl")
    (tmp_path / "part.step").write_text("x")
    with pytest.raises(MeshError, match="part.step: unknown format"):
        validate_mesh(tmp_path / "part.step")


def test_prepare_part_meshes(tmp_path):
    parts = [PartSpec(name="blade", procedural="turbine_blade"),
             PartSpec(name="gone", mesh=tmp_path / "gone.obj")]
    with pytest.raises(MeshError, match="gone.obj"):
        prepare_part_meshes(parts, tmp_path / "meshes")
    out = prepare_part_meshes(parts[:1], tmp_path / "meshes")
    assert out[0]["name"] == "blade" and out[0]["path"].endswith("blade.stl")
