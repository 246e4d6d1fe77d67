"""Datasets as MLflow run inputs, so the runs table's Dataset column names each data version.

Every training and evaluation run logs the datasets it used (MLflow's ``log_input``; here the
client's ``log_inputs``, since the gate and cycle runs are not the active run):

- name: ``<dataset>@<tag>``, the workspace's DVC version (git tag) since which the folder has
  held these files: ``synthetic@datasets``, ``labeled@cycle-2`` (``@<commit>`` when no tag
  holds it, ``@unversioned`` outside a workspace repo);
- digest: the dataset's md5 (``DatasetRef.md5``, the value of ``lineage.data.<name>.md5``);
- source: that version of ``data/`` on the workspace's DVC remote
  (``<remote>/files/md5/<ab>/<cdef...>.dir``, the manifest ``dvc pull`` reads);
- context: ``training``, ``validation`` (val), or ``scoring`` (the pool a cycle scores);
- input tags: ``dvc.path`` (data/<name>), ``dvc.tag``, ``dvc.rev`` (workspace commit),
  ``num_images``.
The ``lineage.*`` tags stay as they are; this is the same facts where the UI shows them.
"""

from __future__ import annotations

import logging
import warnings
from typing import Mapping

from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag

from synthloop.artifacts import DatasetRef
from synthloop.config import PipelineConfig

log = logging.getLogger(__name__)
CONTEXT_TAG = "mlflow.data.context"  # what mlflow.log_input(context=...) sets
CONTEXTS = {"val": "validation", "pool": "scoring"}  # every other dataset: "training"


def context_of(name: str) -> str:
    return CONTEXTS.get(name, "training")


def remote_url(cfg: PipelineConfig) -> str:
    """The workspace's DVC remote, as ``versioning.remote.workspace_repo`` configures it."""
    return cfg.versioning.remote_url or str(cfg.workspace.resolve() / "dvc-remote")


def dataset_input(cfg: PipelineConfig, ref: DatasetRef, *, context: str | None = None
                  ) -> DatasetInput:
    """The MLflow input record of ``ref`` (see the module docstring)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from synthloop.versioning.dataset_tags import data_version, remote_object

    version = data_version(cfg.workspace.resolve(), ref.name)
    label = version.tag or (version.rev[:10] if version.rev else "unversioned")
    where = (remote_object(remote_url(cfg), version.data_md5) if version.data_md5
             else str(cfg.workspace.resolve() / "data" / ref.name))
    with warnings.catch_warnings():  # a local path fits two local source kinds: either is fine
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(where)
    dataset = MetaDataset(source=source, name=f"{ref.name}@{label}", digest=ref.md5)
    tags = {CONTEXT_TAG: context or context_of(ref.name), "dvc.path": f"data/{ref.name}",
            "dvc.tag": version.tag or "", "dvc.rev": version.rev or "",
            "num_images": str(ref.num_images)}
    return DatasetInput(dataset=dataset._to_mlflow_entity(),
                        tags=[InputTag(key=k, value=v) for k, v in tags.items()])


def log_datasets(cfg: PipelineConfig, run_id: str, datasets: Mapping[str, DatasetRef | None],
                 client: MlflowClient | None = None) -> None:
    """Log ``datasets`` ({name: ref}; the name picks the context; None: left out) as inputs of
    ``run_id``."""
    inputs = [dataset_input(cfg, ref, context=context_of(name)) for name, ref in datasets.items()
              if ref is not None]
    if not inputs:
        return
    (client or MlflowClient()).log_inputs(run_id, datasets=inputs)
