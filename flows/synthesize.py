"""Flow `synthesize`: render the synthetic set, the validation set and the pool; version them.

Deployed in prefect.yaml. Rerunning resumes: finished renders are skipped (stages/render.py).
A changed CAD file is the `cad_retrain` flow's job (re-renders only that part's images).
"""

from __future__ import annotations

from prefect import flow

from flow_support import load, prefect_runner
from synthloop.stages.pipeline import prepare_data


@flow(name="synthesize", log_prints=True, retries=1, retry_delay_seconds=30)
def synthesize(config: str = "pipelines/demo.yaml", overrides: list[str] | None = None,
               trigger: str = "manual") -> dict:
    cfg = load(config, overrides)
    refs = prepare_data(cfg, runner=prefect_runner)
    return {name: {"md5": ref.md5, "num_images": ref.num_images} for name, ref in refs.items()}


if __name__ == "__main__":
    import sys

    print(synthesize(*sys.argv[1:2]))
