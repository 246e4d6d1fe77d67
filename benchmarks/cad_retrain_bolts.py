"""What a changed CAD file costs on bolts (issue 16, part 3), at toy scale, against starting over.

The bolts pipeline (pipelines/bolts.yaml: workbench scenes, Bolt and Washer from ``cad:``, the
real photos as pool and val) shrunk to 8 renders of 320x180 at 1 spp; detector at 320 px:

1. render the synthetic set, import val/pool, pretrain M0, one DAL cycle (k=3): the champion
2. the Washer's CAD changes (sizes M8, M10 -> M8, M12: new meshes, new hash)
3. ``cad_retrain.run``: re-render the renders that show a Washer, version, fine-tune the
   champion on renders + real labels (2 epochs), gate                          -> "cad retrain"
4. the alternative: render all 8 again with the new meshes (fresh folder), and pretrain from
   scratch (2 epochs: step 1's pretrain CPU is reused, same recipe and image count) -> "full"

CPU = user + system seconds of this process (training threads) plus its finished children
(Blender workers, git, DVC): ``resource.getrusage``. Also: the share of renders that show a
Washer in the full bolts plan (100 images, 15-45 parts each) and, for contrast, with 1-3 parts
an image (plans only, nothing rendered).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/cad_retrain_bolts.py

Prints a table and writes benchmarks/results/cad_retrain_bolts.json.

Full size (``--workspace``): the same Washer change answered on a finished bolts workspace
(``make demo``'s workspace/bolts: 100 renders of 960x540, the champion after three cycles, the
real labels), at the pipeline's own settings except ``--set`` overrides; writes
benchmarks/results/cad_retrain_bolts_full.json. The workspace is changed for good (its renders
show the new washer afterwards): use a copy or a workspace you no longer need.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/cad_retrain_bolts.py --workspace workspace/bolts \\
        --set cad_retrain.epochs=2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
OUT = ROOT / "benchmarks" / "results" / "cad_retrain_bolts.json"
TOY = ["synthetic.num_images=8", "synthetic.width=320", "synthetic.height=180",
       "synthetic.samples=1", "pool.max_side=320", "val.max_side=320",
       "detector.min_size=180", "detector.max_size=320",
       "pretrain={epochs: 2, batch_size: 2, warmup_steps: 1, crop: null, max_minutes: 5,"
       " eval_every_epochs: 1, lr: 0.02, grad_clip_norm: 10.0, augment: paper}",
       "finetune={epochs: 1, batch_size: 2, warmup_steps: 1, crop: null, max_minutes: 5,"
       " lr: 0.01, grad_clip_norm: 10.0, augment: paper}",
       "active.k=3", "active.cycles=1", "cad_retrain.epochs=2", "gate.bootstrap_resamples=50"]


def cpu() -> tuple[float, float]:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime


def measured(fn):
    t, (s0, c0) = time.perf_counter(), cpu()
    out = fn()
    s1, c1 = cpu()
    return out, {"wall_s": round(time.perf_counter() - t, 1), "cpu_self_s": round(s1 - s0, 1),
                 "cpu_children_s": round(c1 - c0, 1), "cpu_s": round(s1 - s0 + c1 - c0, 1)}


def config(tmp: Path, washer: str, workspace: Path | None = None, overrides=TOY):
    from synthloop.config import load_config

    text = (ROOT / "pipelines" / "bolts.yaml").read_text()
    text = text.replace("../datasets/", f"{ROOT}/datasets/")
    text = text.replace("sizes: [M8, M10]", f"sizes: {washer}")
    path = tmp / f"bolts-{washer.count('M12')}.yaml"
    path.write_text(text)
    return load_config(path, overrides=[f"workspace={workspace or tmp / 'ws'}", *overrides])


def full_size(workspace: Path, overrides: list[str]) -> int:
    """The Washer change answered on a finished full-size bolts workspace."""
    from synthloop.stages import cad_retrain

    result: dict = {"machine": platform.processor() or platform.machine(),
                    "workspace": str(workspace), "overrides": overrides,
                    "change": "Washer sizes [M8, M10] -> [M8, M12]"}
    with tempfile.TemporaryDirectory() as tmp_:
        changed = config(Path(tmp_), "[M8, M12]", workspace.resolve(), overrides)
        rec, result["cad_retrain"] = measured(lambda: cad_retrain.run(changed, progress=True))
    result["cad_retrain_record"] = {k: rec.get(k) for k in (
        "outcome", "changed", "kept_renders", "labels_used", "candidate_version",
        "champion_before", "val_metrics", "rule", "reason",
        "render_and_version_s", "seconds", "host_cpu_s")}
    result["cad_retrain_record"]["rerendered"] = len(rec.get("rerendered") or [])
    out = OUT.with_name("cad_retrain_bolts_full.json")
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    m, r = result["cad_retrain"], result["cad_retrain_record"]
    print(f"cad retrain: {r['rerendered']} renders redone, outcome {r['outcome']} ({r['reason']});"
          f" wall {m['wall_s']} s, CPU {m['cpu_s']} s; wrote {out}")
    return 0


def washer_share(cfg, tmp: Path, **update) -> dict:
    """Share of planned images that show a Washer (plans only)."""
    from synthloop.stages.cad_retrain import images_showing
    from synthloop.synthesis.meshes import resolve_cad_files, resolve_cad_parts
    from synthloop.synthesis.plan import plan_scenes

    domain = cfg.synthetic.model_copy(update=update)
    specs = resolve_cad_files(resolve_cad_parts(cfg.parts, tmp / "cad"), tmp / "cad" / "import")
    plans = plan_scenes(domain, specs)
    shown = images_showing(plans, {cfg.class_names.index("Washer")})
    return {"images": len(plans), "show_washer": len(shown),
            "share": round(len(shown) / len(plans), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=None,
                    help="full size: a finished bolts workspace (changed for good)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override for --workspace (key=value)")
    args = ap.parse_args()
    if args.workspace:
        return full_size(args.workspace, args.overrides)
    from synthloop.config import IntRange
    from synthloop.stages import cad_retrain, pretrain, render
    from synthloop.stages.pipeline import prepare_data, run_pipeline
    from synthloop.synthesis.meshes import resolve_cad_files, resolve_cad_parts
    from synthloop.synthesis.render import render_domain

    result: dict = {"machine": platform.processor() or platform.machine(), "toy": TOY}
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        cfg = config(tmp, "[M8, M10]")
        result["plan_share_bolts_15_45_parts"] = washer_share(cfg, tmp, num_images=100)
        result["plan_share_1_3_parts"] = washer_share(
            cfg, tmp, num_images=100, parts_per_image=IntRange(min=1, max=3))
        synthetic, result["render_all_initial"] = measured(
            lambda: render.run(cfg, "synthetic", progress=False))
        refs = prepare_data(cfg)
        _, result["pretrain"] = measured(lambda: pretrain.run(cfg, synthetic, refs["val"],
                                                              progress=False))
        _, result["dal_cycle"] = measured(lambda: run_pipeline(cfg, cycles=1, progress=False))

        changed = config(tmp, "[M8, M12]")
        rec, result["cad_retrain"] = measured(lambda: cad_retrain.run(changed))
        result["cad_retrain_record"] = {k: rec.get(k) for k in (
            "outcome", "changed", "rerendered", "kept_renders", "labels_used",
            "candidate_version", "champion_before", "val_metrics", "rule", "reason",
            "render_and_version_s", "seconds")}
        ws = changed.workspace.resolve()
        parts = resolve_cad_files(resolve_cad_parts(changed.parts, ws / "cad"),
                                  ws / "cad" / "import")
        _, result["render_all_new_mesh"] = measured(lambda: render_domain(
            changed.synthetic, parts, changed.class_names, tmp / "full_synthetic",
            render_cfg=changed.render, progress=False))
    full = result["render_all_new_mesh"]["cpu_s"] + result["pretrain"]["cpu_s"]
    result["full_rerender_plus_pretrain_cpu_s"] = round(full, 1)
    result["cad_retrain_cpu_s"] = result["cad_retrain"]["cpu_s"]
    result["cad_over_full"] = round(result["cad_retrain"]["cpu_s"] / full, 2)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    r = result["cad_retrain_record"]
    print(f"renders redone by the CAD retrain: {len(r['rerendered'])} of 8; outcome "
          f"{r['outcome']} ({r['reason']})")
    for key in ("render_all_initial", "pretrain", "dal_cycle", "cad_retrain",
                "render_all_new_mesh"):
        m = result[key]
        print(f"{key:<22} wall {m['wall_s']:>7.1f} s  CPU {m['cpu_s']:>7.1f} s "
              f"(self {m['cpu_self_s']}, children {m['cpu_children_s']})")
    print(f"full re-render + pretrain: {full:.1f} CPU s; CAD retrain {result['cad_retrain_cpu_s']}"
          f" CPU s ({result['cad_over_full']:.2f}x)")
    print("washer share of planned images:", result["plan_share_bolts_15_45_parts"],
          result["plan_share_1_3_parts"])
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
