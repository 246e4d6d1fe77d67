"""Flow `pretrain`: data (rendered or found) -> M0 on the synthetic renders, registered in MLflow
and made champion when none exists. A rerun returns the recorded model (stages/pretrain.py)."""

from __future__ import annotations

from prefect import flow

from flow_support import load, prefect_runner
from synthloop.stages import pretrain as pretrain_stage
from synthloop.stages.pipeline import prepare_data


@flow(name="pretrain", log_prints=True, retries=1, retry_delay_seconds=30)
def pretrain(config: str = "pipelines/demo.yaml", overrides: list[str] | None = None) -> dict:
    cfg = load(config, overrides)
    data = prepare_data(cfg, runner=prefect_runner)
    model = prefect_runner("pretrain", pretrain_stage.run, cfg, data["synthetic"], data["val"],
                           progress=False)
    return {"run_id": model.run_id, "version": model.version, "metrics": model.metrics}


if __name__ == "__main__":
    import sys

    print(pretrain(*sys.argv[1:2]))
