"""The MLflow registry writer: the only code that moves the ``champion``/``challenger`` aliases.

Deciding is ``gating.decision.decide_promotion`` (pure); this module applies a decision.

A version whose registering run was killed after ``create_model_version`` (before the stage
recorded it) is never gated: the rerun trains and registers again. ``tag_orphaned_versions``
tags such versions ``synthloop.orphaned=true`` with the reason, so the registry does not show
them as candidates waiting for a gate.
"""

from __future__ import annotations

from typing import Any, Collection

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from synthloop import faults
from synthloop.tracking_recovery import INTERRUPTED_TAG

CHAMPION = "champion"
CHALLENGER = "challenger"
ORPHANED_TAG = "synthloop.orphaned"
ORPHANED_REASON_TAG = "synthloop.orphaned_reason"
ENDED_UNFINISHED = ("KILLED", "FAILED")  # run states that never hand a version to a gate


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


def write_descriptions(client: MlflowClient, name: str, version: str, *, version_text: str,
                       model_text: str | None = None) -> None:
    """The gate's verdict as ``version``'s description; ``model_text`` (given when the version
    now serves) as the registered model's."""
    client.update_model_version(name, version, description=version_text)
    if model_text is not None:
        client.update_registered_model(name, description=model_text)


def tag_orphaned_versions(client: MlflowClient, name: str, *,
                          recorded: Collection[str] = ()) -> list[str]:
    """Tag the versions of ``name`` that no alias and no stage record names and whose
    registering run ended KILLED or FAILED: registered, then the process died before its
    stage recorded the version. ``recorded``: versions named by the workspace's stage records.
    Run it after ``tracking_recovery.mark_interrupted_runs``; returns the versions tagged now.
    """
    try:
        aliased = {str(v) for v in client.get_registered_model(name).aliases.values()}
    except MlflowException:  # no registered model yet
        return []
    tagged = []
    for mv in client.search_model_versions(f"name='{name}'"):
        version = str(mv.version)
        if (version in aliased or version in recorded or not mv.run_id
                or mv.tags.get(ORPHANED_TAG) == "true"):
            continue
        run = client.get_run(mv.run_id)
        if run.info.status not in ENDED_UNFINISHED:
            continue
        reason = (f"registered by run {mv.run_id} ({run.info.run_name}), which ended "
                  f"{run.info.status} before its stage recorded the version; never gated, "
                  "never aliased (a rerun registers its own version)")
        note = run.data.tags.get(INTERRUPTED_TAG)
        if note:
            reason += f"; run note: {note}"
        client.set_model_version_tag(name, version, ORPHANED_TAG, "true")
        client.set_model_version_tag(name, version, ORPHANED_REASON_TAG, reason[:4900])
        tagged.append(version)
    return tagged
