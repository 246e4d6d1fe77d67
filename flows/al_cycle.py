"""Flow `al_cycle`: one more DAL cycle (score -> query -> label -> finetune -> gate) under the
workspace's cycle lock. Started by hand, by `continuous_training`, or by the event trigger in
prefect.yaml (pool grew / drift detected / champion degraded); ``trigger`` says which, and the
lock's log (state/cycle_runs.jsonl) records whether this request ran or was skipped because
another cycle held the lock.
"""

from __future__ import annotations

from prefect import flow

from flow_support import cycle_slot, load, prefect_runner
from synthloop.stages.monitor import run_next_cycle


@flow(name="al_cycle", log_prints=True, retries=1, retry_delay_seconds=30)
def al_cycle(config: str = "pipelines/demo.yaml", trigger: str = "manual",
             overrides: list[str] | None = None, wait_s: float | None = None) -> dict:
    cfg = load(config, overrides)
    with cycle_slot() as slot:  # server mode: one cycle at a time across workers
        if slot["limit"]:
            print(f"cycle slot of {slot['limit']} taken after {slot['waited_s']} s")
        entry = run_next_cycle(cfg, trigger=trigger, runner=prefect_runner, wait_s=wait_s)
    entry = {**entry, "concurrency": slot}
    print(f"cycle request ({trigger}): {entry['outcome']}"
          + (f", cycle {entry['cycle']}, promoted {entry['promoted']}" if entry["outcome"] == "ran"
             else f", lock held by {entry.get('held_by')}"))
    return entry


if __name__ == "__main__":
    import sys

    print(al_cycle(*sys.argv[1:2]))
