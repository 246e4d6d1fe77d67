"""Flow `cad_retrain`: a changed CAD file retrains itself. Started by the `cad-retrain`
deployment's trigger on `synthloop.cad.changed` (the pool watcher emits it when a part's mesh
hash differs from the champion's), or by hand. The stage re-renders only the renders that show
a changed part (same plans and seeds, new mesh), versions them, fine-tunes the champion on
renders + real labels and gates it (stages/cad_retrain.py); each step is a task. It takes the
workspace's cycle lock and, on a stack server, the one cycle slot, like `al_cycle`.
"""

from __future__ import annotations

from prefect import flow

from flow_support import cycle_slot, load, prefect_runner
from synthloop.stages import cad_retrain as cad_retrain_stage


@flow(name="cad_retrain", log_prints=True, retries=1, retry_delay_seconds=30)
def cad_retrain(config: str = "pipelines/demo.yaml", trigger: str = "manual",
                overrides: list[str] | None = None, wait_s: float | None = None) -> dict:
    cfg = load(config, overrides)
    with cycle_slot():
        result = cad_retrain_stage.run(cfg, runner=prefect_runner, trigger=trigger, wait_s=wait_s)
    print(f"cad retrain ({trigger}): {result['outcome']}"
          + (f", {len(result['rerendered'])} renders redone, {result['kept_renders']} kept, "
             f"candidate v{result['candidate_version']}" if "rerendered" in result else ""))
    return result


if __name__ == "__main__":
    import sys

    print(cad_retrain(*sys.argv[1:2]))
