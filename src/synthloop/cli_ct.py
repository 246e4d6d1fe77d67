"""Continuous-training commands of the ``synthloop`` CLI: lineage, drift, gate, ingest,
next-cycle, serve-flows. Registered by cli.py; each loads the pipeline YAML and calls the library.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Optional

import typer

from synthloop.cli_options import ConfigOpt, OverlayOpt, SetOpt, WorkspaceOpt, load_or_exit
from synthloop.log_setup import setup_logging


def lineage(version: str = typer.Argument(..., help="Registry version number, or an alias "
                                                    "(champion, challenger)."),
            config: Path = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
            overlay: list[Path] = OverlayOpt, set_: list[str] = SetOpt,
            as_json: bool = typer.Option(False, "--json", help="Print the chain as JSON.")) -> None:
    """Print a model's chain back to the synthetic dataset and the CAD files it came from."""
    from mlflow import MlflowClient

    from synthloop import lineage as lin
    from synthloop import tracking

    cfg = load_or_exit(config, overlay, set_, workspace)
    tracking.setup(cfg)
    steps = lin.trace(MlflowClient(), cfg.registered_model_name, version)
    if as_json:
        typer.echo(json.dumps([{**s.__dict__, "parent": s.parent} for s in steps], indent=2))
        return
    typer.echo(f"{cfg.registered_model_name}: {len(steps)} model(s), newest first\n")
    typer.echo(lin.format_chain(steps, cad_now=lin.cad_hashes(cfg)))


def drift(config: Path = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
          overlay: list[Path] = OverlayOpt, set_: list[str] = SetOpt,
          ingest_first: bool = typer.Option(True, "--ingest/--no-ingest",
                                            help="Ingest from ingest.source first (if set).")) -> None:
    """Check new pool images for drift and say whether a cycle should start (no cycle runs)."""
    from synthloop.stages import ingest, monitor

    setup_logging(False)
    cfg = load_or_exit(config, overlay, set_, workspace)
    ingested = ingest.run(cfg).to_dict() if ingest_first and cfg.ingest.source else None
    record = monitor.check(cfg, ingest_result=ingested)
    d = record["drift"]
    if d:
        for c in d["decision"]["checks"]:
            typer.echo(f"  {c['name']:<11} {c['method']:<5} score {c['score']:.4g}  threshold "
                       f"{c['threshold']:.4g}  {'DRIFT' if c['drifted'] else 'ok'}")
        typer.echo(f"drift: {d['decision']['reason']}")
    typer.echo(f"pool growth since the last cycle: {record['pool_growth']}")
    t = record["trigger"]
    typer.echo(f"trigger: {'FIRE ' + t['event'] if t['fire'] else 'no cycle'} - "
               + "; ".join(t["reasons"]))
    if record["cad_changed"]:
        typer.echo(f"CAD changed since the champion's renders: {record['cad_changed']} "
                   "(synthloop cad retrain re-renders those parts' images and retrains)")
    typer.echo(f"MLflow run: {record['run_id']}")


def gate(version: str = typer.Argument(..., help="Candidate registry version (or alias)."),
         config: Path = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
         overlay: list[Path] = OverlayOpt, set_: list[str] = SetOpt,
         apply: bool = typer.Option(False, "--apply", help="Move the aliases as decided.")) -> None:
    """Decide whether a registered version should replace the champion (bootstrap interval)."""
    from mlflow import MlflowClient

    from synthloop import tracking
    from synthloop.artifacts import EvalResult, ModelRef
    from synthloop.gating.decision import RULE_REFUSED, RULE_RESUMED
    from synthloop.gating.registry import apply_decision
    from synthloop.stages.gate import decide

    setup_logging(False)
    cfg = load_or_exit(config, overlay, set_, workspace)
    tracking.setup(cfg)
    client = MlflowClient()
    name = cfg.registered_model_name
    mv = (client.get_model_version(name, version) if version.isdigit()
          else client.get_model_version_by_alias(name, version))
    run = client.get_run(mv.run_id)
    metrics = {k[len("val_"):]: v for k, v in run.data.metrics.items() if k.startswith("val_")}
    ev = EvalResult(metrics=metrics, dataset_md5=run.data.params.get("val.md5", ""),
                    num_images=0)
    t0 = time.perf_counter()
    record, _ = decide(cfg, client, ModelRef(run_id=mv.run_id, uri=mv.source,
                                             version=str(mv.version)), ev)
    typer.echo(json.dumps(record, indent=2, default=str))
    typer.echo(f"({time.perf_counter() - t0:.1f} s)")
    if record["rule"] == RULE_REFUSED:  # fail closed: nothing to apply, and say so loudly
        typer.secho(f"error: {record['reason']}; no alias moved", fg="red", err=True)
        raise typer.Exit(1)
    if apply and record["rule"] != RULE_RESUMED:
        apply_decision(client, name, str(mv.version), promote=record["promote"])
        typer.echo("aliases moved" if record["promote"] else "challenger set; champion kept")


def ingest_cmd(source: Optional[str] = typer.Option(None, help="Folder or s3://bucket/prefix "
                                                               "(default: ingest.source)."),
               config: Path = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
               overlay: list[Path] = OverlayOpt, set_: list[str] = SetOpt,
               emit: Optional[bool] = typer.Option(
                   None, "--emit/--no-emit",
                   help="Send the pool-growth event (synthloop.pool.grew) to the Prefect server "
                        "at $PREFECT_API_URL when the pool grew by >= trigger.pool_growth_min "
                        "since the last cycle; prefect.yaml's al-cycle trigger then starts a "
                        "cycle that loads this --config file. Default: on when PREFECT_API_URL "
                        "is set.")) -> None:
    """Validate and add new camera images to data/pool; commit a DVC version (tag pool-<n>)."""
    import os

    from synthloop.stages import ingest

    setup_logging(False)
    cfg = load_or_exit(config, overlay, set_, workspace)
    api_url = os.environ.get("PREFECT_API_URL")
    if emit and not api_url:
        raise ValueError("--emit needs PREFECT_API_URL (the Prefect server's API, e.g. "
                         "http://127.0.0.1:4200/api)")
    result = ingest.run(cfg, source=source)
    typer.echo(f"added {len(result.added)}, rejected {len(result.rejected)} "
               f"({result.duplicates} duplicates); pool {result.pool_size}; data {result.data_md5}")
    for key, reason in result.rejected:
        typer.echo(f"  rejected {key}: {reason}")
    if emit is not False and api_url:
        from synthloop.stack.events import emit_pool_growth
        from synthloop.stages.monitor import baseline, pool_ids

        growth = len(set(pool_ids(cfg)) - baseline(cfg))
        sent = emit_pool_growth(api_url, cfg, config_path=str(config.resolve()),
                                pool_growth=growth)
        typer.echo(f"event {sent['event']} sent to {api_url} ({sent['event_id']})"
                   if sent["fire"] else f"no event: {sent['reasons'][0]}")


def next_cycle(config: Path = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
               overlay: list[Path] = OverlayOpt, set_: list[str] = SetOpt,
               trigger: str = typer.Option("cli", help="Recorded in state/cycle_runs.jsonl."),
               wait: Optional[float] = typer.Option(None, help="Seconds to wait for the lock "
                                                              "(default trigger.lock_wait_s).")) -> None:
    """Run one more DAL cycle under the workspace's cycle lock (skipped if another runs)."""
    from synthloop.stages.monitor import run_next_cycle

    setup_logging(False)
    cfg = load_or_exit(config, overlay, set_, workspace)
    typer.echo(json.dumps(run_next_cycle(cfg, trigger=trigger, wait_s=wait, progress=True),
                          indent=2, default=str))


def serve_flows(port: int = typer.Option(4200, help="Prefect server port on 127.0.0.1."),
                project_dir: Path = typer.Option(Path("."), help="Folder holding prefect.yaml."),
                worker: bool = typer.Option(True, "--worker/--no-worker"),
                home: Optional[Path] = typer.Option(None, help="PREFECT_HOME (default ~/.prefect)."
                                                    )) -> None:
    """Start a Prefect server, the process work pool, prefect.yaml's deployments and a worker."""
    from synthloop.flows_server import POOL, start_server

    project_dir = project_dir.resolve()
    if not (project_dir / "prefect.yaml").exists():
        raise FileNotFoundError(f"{project_dir}/prefect.yaml not found (use --project-dir)")
    def stop_on_sigterm(signum, frame):  # a service manager stops us: take the children along
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    server = start_server(project_dir, port=port, home=home)
    try:
        server.create_pool()
        typer.echo(server.deploy_all()[-2000:])
        if worker:
            server.start_worker()
        typer.echo(f"Prefect UI: http://127.0.0.1:{port}   (PREFECT_API_URL={server.api_url})\n"
                   f"work pool {POOL}; Ctrl-C stops server and worker")
        while all(p.poll() is None for p in server.processes):
            time.sleep(1.0)
        typer.secho("a Prefect process exited; stopping", fg="yellow", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def register(app: typer.Typer) -> None:
    app.command()(lineage)
    app.command()(drift)
    app.command()(gate)
    app.command(name="ingest")(ingest_cmd)
    app.command(name="next-cycle")(next_cycle)
    app.command(name="serve-flows")(serve_flows)
