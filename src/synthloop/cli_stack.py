"""``synthloop stack up | status | logs | down``: the production stack as processes on one
machine (PostgreSQL 15, S3, MLflow, Prefect server + worker, the REST server), from
infra/stack.yaml. Where Docker runs, infra/compose.yaml starts the same stack in containers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

stack_app = typer.Typer(help=__doc__, no_args_is_help=True)

ConfigOpt = typer.Option(Path("infra/stack.yaml"), "--config", "-c",
                         help="The stack config: ports, databases, buckets, folders.")
DataOpt = typer.Option(None, "--data-dir", help="Overrides data_dir of the stack config "
                                                 "(postgres/, s3/, logs/, run/ live there).")


def _settings(config: Path, data_dir: Optional[Path]):
    from synthloop.stack.settings import load_stack

    return load_stack(config, data_dir=data_dir)


@stack_app.command()
def up(config: Path = ConfigOpt, data_dir: Optional[Path] = DataOpt) -> None:
    """Start what is not running yet, in order, each healthy before the next; an existing data
    folder keeps its runs, registry, flow history and objects."""
    from synthloop.stack.lifecycle import up as stack_up
    from synthloop.stack.procs import StackError

    settings = _settings(config, data_dir)
    try:
        timings = stack_up(settings, echo=typer.echo)
    except StackError as exc:
        raise RuntimeError(str(exc)) from None
    typer.echo(f"stack healthy in {timings['total']:.1f} s: MLflow {settings.mlflow_url}, "
               f"Prefect {settings.prefect_api_url.removesuffix('/api')}, "
               f"serving {settings.serve_url}, S3 {settings.s3_endpoint}\n"
               f"pipelines use it with --overlay {settings.site_overlay} "
               f"(tracking.uri: {settings.mlflow_url}); logs in {settings.logs_dir}")


@stack_app.command()
def status(config: Path = ConfigOpt, data_dir: Optional[Path] = DataOpt,
           as_json: bool = typer.Option(False, "--json", help="One JSON object per service.")
           ) -> None:
    """Each service: running (our pid file names a live process) and healthy. Exit code 0
    when all are healthy, 1 otherwise."""
    from dataclasses import asdict

    from synthloop.stack.lifecycle import status as stack_status

    report = stack_status(_settings(config, data_dir))
    for item in report:
        if as_json:
            typer.echo(json.dumps(asdict(item)))
        else:
            state = "healthy" if item.healthy else ("UNHEALTHY" if item.running else "down")
            typer.echo(f"{item.service:9s} {state:9s} {item.detail}")
    raise typer.Exit(0 if all(item.healthy for item in report) else 1)


@stack_app.command()
def logs(service: Optional[str] = typer.Argument(None, help="postgres, s3, mlflow, prefect, "
                                                             "prefect-deploy, worker or serve "
                                                             "(default: all)."),
         lines: int = typer.Option(20, "--lines", "-n", min=1, help="Lines from each log's end."),
         config: Path = ConfigOpt, data_dir: Optional[Path] = DataOpt) -> None:
    """The end of each service's log (all logs live in <data_dir>/logs)."""
    from synthloop.stack.procs import tail

    settings = _settings(config, data_dir)
    files = sorted(settings.logs_dir.glob("*.log"))
    if service is not None:
        files = [f for f in files if f.stem == service]
        if not files:
            known = ", ".join(f.stem for f in sorted(settings.logs_dir.glob("*.log"))) or "none"
            raise ValueError(f"no log for {service!r} in {settings.logs_dir} (logs: {known})")
    elif not files:
        raise ValueError(f"no logs in {settings.logs_dir}: has `synthloop stack up` run with "
                         "this data folder?")
    for path in files:
        typer.echo(f"==> {path} <==\n{tail(path, lines)}\n")


@stack_app.command()
def down(config: Path = ConfigOpt, data_dir: Optional[Path] = DataOpt) -> None:
    """Stop what `stack up` started (the processes its pid files name, and what those started,
    such as the worker's flow runs), newest first; the data folder stays for the next `stack up`."""
    from synthloop.stack.lifecycle import down as stack_down

    stopped = stack_down(_settings(config, data_dir), echo=typer.echo)
    typer.echo(f"stopped {len(stopped)} service(s)" if stopped else "nothing of the stack ran")
