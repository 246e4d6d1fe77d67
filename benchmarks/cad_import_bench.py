"""STEP import cost (issue "Bring your own part"): the OpenCascade binding and tessellation.

Measures, in one process: importing OCP, writing a STEP assembly (a bolt and a washer, inches),
reading it back (units, named solids), tessellating the bolt at three tolerance settings
(triangles, wall and CPU time), a cache hit of ``import_cad`` (hash of the file only), and the
installed size of the binding. The wheel's download size is what pip reported
(``cadquery_ocp_novtk-8.0.1.1.0-cp311-cp311-manylinux_2_28_x86_64.whl``, 66.6 MB).

    .venv/bin/python benchmarks/cad_import_bench.py

Prints a table and writes benchmarks/results/cad_import.json.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, round(time.perf_counter() - t, 3), round(time.process_time() - c, 3)


def _installed_mb() -> float:
    import OCP

    site = Path(OCP.__file__).resolve().parents[1]
    total = 0
    for name in ("OCP", "cadquery_ocp_novtk.libs"):
        total += sum(f.stat().st_size for f in (site / name).rglob("*") if f.is_file())
    return round(total / 2**20, 1)


def main() -> int:
    _, import_s, import_cpu = _timed(lambda: __import__("OCP.STEPControl"))
    from cad_support import bolt, washer
    from synthloop.synthesis.cad_import import import_cad, read_cad, tessellate, write_step

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        step = Path(tmp) / "asm.step"
        _, write_s, _ = _timed(lambda: write_step(step, {"bolt": bolt(), "washer": washer()},
                                                  unit="inch"))
        cad, read_s, read_cpu = _timed(lambda: read_cad(step))
        for lin, ang in ((0.5, 30.0), (0.1, 15.0), (0.01, 5.0)):
            shape = read_cad(step).solids[0].shape  # fresh: meshing is stored on the shape
            tri, wall, cpu = _timed(lambda: tessellate(shape, linear_deflection_mm=lin,
                                                       angular_deflection_deg=ang))
            rows.append({"linear_deflection_mm": lin, "angular_deflection_deg": ang,
                         "triangles": int(len(tri)), "wall_s": wall, "cpu_s": cpu})
        _, first_s, first_cpu = _timed(lambda: import_cad(step, Path(tmp) / "c"))
        _, hit_s, hit_cpu = _timed(lambda: import_cad(step, Path(tmp) / "c"))
    result = {"binding": "cadquery-ocp-novtk==8.0.1.1.0", "wheel_mb": 66.6,
              "installed_mb": _installed_mb(), "import_ocp_s": import_s,
              "import_ocp_cpu_s": import_cpu, "write_step_s": write_s,
              "read_step_s": read_s, "read_step_cpu_s": read_cpu, "file_unit": cad.unit,
              "solids": cad.names, "tessellation": rows,
              "import_cad_first_s": first_s, "import_cad_first_cpu_s": first_cpu,
              "import_cad_cache_hit_s": hit_s, "import_cad_cache_hit_cpu_s": hit_cpu,
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip()}
    print(f"OCP import {import_s} s; read STEP {read_s} s (unit {cad.unit}, solids {cad.names})")
    print("| linear mm | angular deg | triangles | wall s | cpu s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['linear_deflection_mm']} | {r['angular_deflection_deg']} | {r['triangles']} "
              f"| {r['wall_s']} | {r['cpu_s']} |")
    print(f"import_cad: first {first_s} s, cache hit {hit_s} s; installed "
          f"{result['installed_mb']} MB")
    out = ROOT / "benchmarks" / "results" / "cad_import.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
