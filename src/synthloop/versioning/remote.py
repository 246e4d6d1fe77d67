"""The pipeline's workspace repo as its config describes it: remote URL (a folder by default,
``s3://bucket/prefix`` for S3), S3 endpoint and AWS profile. Stages call these two functions so
that every data version is committed, tagged and pushed the same way.

S3 credentials: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in the environment, or the named
``versioning.s3_profile`` of ~/.aws; they are never written to the repo or logged.
"""

from __future__ import annotations

from synthloop import faults
from synthloop.config import PipelineConfig
from synthloop.versioning import dvc_repo


def workspace_repo(cfg: PipelineConfig) -> dvc_repo.Workspace:
    """Open (and on first use initialize) the pipeline's git + DVC workspace repo."""
    root = cfg.workspace.resolve()
    v = cfg.versioning
    return dvc_repo.init_workspace(root, remote_url=v.remote_url or str(root / "dvc-remote"),
                                   endpoint_url=v.s3_endpoint_url, profile=v.s3_profile)


def commit_and_push(cfg: PipelineConfig, message: str, *, tag: str | None = None) -> str:
    """``dvc add data`` + git commit (+ tag), then push when ``versioning.push``; -> data md5."""
    repo = workspace_repo(cfg)
    md5 = dvc_repo.commit_data(repo, message, tag=tag)
    faults.point("dvc.push")  # committed and tagged, not yet pushed
    if cfg.versioning.push:
        dvc_repo.push(repo)
    return md5
