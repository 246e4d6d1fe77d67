"""The MLflow registry writer: the only code that moves the ``champion``/``challenger`` aliases.

Deciding is ``gating.decision.decide_promotion`` (pure); this module applies a decision.
"""

from __future__ import annotations

from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from synthloop import faults

CHAMPION = "champion"
CHALLENGER = "challenger"


def register_version(client: MlflowClient, name: str, model_uri: str, run_id: str,
                     tags: dict[str, Any]) -> str:
    """Create a registry version for ``model_uri`` (and the registered model if needed)."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="synthloop detector; alias "
                                       "'champion' serves, 'challenger' is the last candidate")
    # An MLflow 3 logged model (models:/m-<id>): a tracking server accepts it as the source
    # only with its model_id (the embedded SQLite store did not check).
    model_id = model_uri[len("models:/"):] if model_uri.startswith("models:/m-") else None
    mv = client.create_model_version(name, model_uri, run_id=run_id,
                                     tags={k: str(v) for k, v in tags.items()}, model_id=model_id)
    faults.point("registry.register")  # a version exists; the stage has not recorded it
    return str(mv.version)


def get_alias_version(client: MlflowClient, name: str, alias: str) -> Any | None:
    """The model version behind ``alias``, or None if the alias (or the model) does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def apply_decision(client: MlflowClient, name: str, version: str, *, promote: bool) -> None:
    """Mark ``version`` challenger; move champion to it only when the gate said promote."""
    client.set_registered_model_alias(name, CHALLENGER, version)
    faults.point("gate.alias_move")  # challenger moved, champion not yet
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
