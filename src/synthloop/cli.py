"""The ``synthloop`` command line. Each command loads a pipeline YAML and calls stages.

Config precedence: the YAML < ``--overlay`` files < ``--set key.sub=value`` flags.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import click
import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="synthloop: CAD renders + deep active learning for industrial detectors.")

CONFIG_HELP = "Pipeline YAML (pipelines/*.yaml)."
SET_HELP = "Override a config value, e.g. --set active.k=25 (repeatable)."
OVERLAY_HELP = "Site overlay YAML merged over the pipeline file (repeatable)."


def _load(config: Path, overlay: list[Path], overrides: list[str], workspace: Path | None):
    from synthloop.config import ConfigError, load_config

    if workspace is not None:
        overrides = [*overrides, f"workspace={workspace}"]
    try:
        cfg = load_config(config, overlays=overlay, overrides=overrides)
        if cfg.runtime.device.startswith("cuda"):  # a missing GPU stops here, before any work
            from synthloop.detection.device import resolve_device

            resolve_device(cfg.runtime.device)
        return cfg
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None


def _logging(verbose: bool) -> None:
    # Our own handler on the package logger: Prefect (in flows/) reconfigures the root logger.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                           datefmt="%H:%M:%S"))
    pkg = logging.getLogger("synthloop")
    pkg.handlers[:] = [handler]
    pkg.setLevel(logging.DEBUG if verbose else logging.INFO)
    pkg.propagate = False
    for noisy in ("alembic", "mlflow", "urllib3", "botocore", "dvc", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


ConfigOpt = typer.Option(Path("pipelines/demo.yaml"), "--config", "-c", help=CONFIG_HELP)
SetOpt = typer.Option([], "--set", help=SET_HELP)
OverlayOpt = typer.Option([], "--overlay", help=OVERLAY_HELP)
WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace folder (overrides the YAML).")


@app.command()
def demo(config: Path = ConfigOpt, cycles: Optional[int] = typer.Option(
             None, help="DAL cycles to run (default: active.cycles of the config)."),
         workspace: Optional[Path] = WorkspaceOpt, overlay: list[Path] = OverlayOpt,
         set_: list[str] = typer.Option([], "--set", help=SET_HELP),
         verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Run the whole pipeline: render -> pretrain M0 -> DAL cycles with the promotion gate.

    Reruns resume: finished renders, models and cycles are skipped.
    """
    from synthloop.stages.pipeline import run_pipeline

    _logging(verbose)
    cfg = _load(config, overlay, set_, workspace)
    t0 = time.perf_counter()
    rows = run_pipeline(cfg, cycles=cycles)
    print_report(cfg, rows, time.perf_counter() - t0)


def print_report(cfg, rows, seconds: float) -> None:
    from synthloop import tracking
    from synthloop.stages.pipeline import champion_summary, format_table

    typer.echo("")
    if cfg.proxy_real:
        typer.echo("NOTE: pool and validation images are a rendered PROXY of real photos "
                   "(other materials, backgrounds, lighting, sensor noise); bring real photos "
                   "for real figures.")
    typer.echo(format_table(rows))
    champ = champion_summary(cfg)
    if champ:
        typer.echo(f"\nchampion: {cfg.registered_model_name} v{champ['version']} "
                   f"(val AP {champ['AP']:.3f}, AP50 {champ['AP50']:.3f})")
    typer.echo(f"wall time: {seconds / 60:.1f} min")
    typer.echo(f"look at the runs:  mlflow ui --backend-store-uri {cfg.tracking_uri}")
    typer.echo(f"                   then open {tracking.runs_url(cfg)}")
    typer.echo(f"dataset versions:  git -C {cfg.workspace} log --oneline --decorate")


@app.command()
def render(domain: str = typer.Argument("synthetic", help="synthetic | pool | val"),
           config: Path = ConfigOpt, num_images: Optional[int] = typer.Option(
               None, "--num-images", "-n", help="Override the domain's num_images."),
           workspace: Optional[Path] = WorkspaceOpt, overlay: list[Path] = OverlayOpt,
           set_: list[str] = SetOpt) -> None:
    """Render one domain of the pipeline into the workspace (resumable)."""
    from synthloop.stages import render as render_stage

    if domain not in ("synthetic", "pool", "val"):
        typer.secho(f"error: unknown domain {domain!r}; known: synthetic, pool, val", fg="red", err=True)
        raise typer.Exit(2)
    _logging(False)
    if num_images is not None:
        set_ = [*set_, f"{domain}.num_images={num_images}"]
    cfg = _load(config, overlay, set_, workspace)
    t0 = time.perf_counter()
    ref = render_stage.run(cfg, domain)
    dt = time.perf_counter() - t0
    typer.echo(f"{ref.num_images} images, {ref.num_annotations} boxes -> {ref.annotations} "
               f"({dt:.0f} s)")


@app.command()
def cycle(config: Path = ConfigOpt, cycles: int = typer.Option(1, help="How many cycles to add."),
          workspace: Optional[Path] = WorkspaceOpt, overlay: list[Path] = OverlayOpt,
          set_: list[str] = SetOpt) -> None:
    """Run DAL cycles after the ones already done (data and M0 are made first if missing)."""
    from synthloop.stages.pipeline import run_pipeline
    from synthloop.stages.workspace import Workspace

    _logging(False)
    cfg = _load(config, overlay, set_, workspace)
    done = 0
    while Workspace.of(cfg).cycle_dir(done + 1).joinpath("gate.json").exists():
        done += 1
    t0 = time.perf_counter()
    rows = run_pipeline(cfg, cycles=done + cycles)
    print_report(cfg, rows, time.perf_counter() - t0)


@app.command()
def experiment(config: Path = ConfigOpt,
               scale: str = typer.Option("cpu", help="paper | cpu | toy, or a name under "
                                         "experiment.scales in the YAML: which grid to run."),
               workspace: Optional[Path] = WorkspaceOpt, overlay: list[Path] = OverlayOpt,
               set_: list[str] = SetOpt, verbose: bool = typer.Option(False, "--verbose", "-v")
               ) -> None:
    """The paper's grid: {R, S+R} x {random (seeds), margin, DBAL} x k, plus multi-cycle DBAL.

    Every run fine-tunes, is evaluated on the real validation set and logged to MLflow; results
    go to <workspace>/experiments/<scale>/ (results.json, table.md shaped like the paper's
    Table A1, fig6.png, fig8.png). Reruns skip finished runs.
    """
    from synthloop.experiments.harness import Harness

    _logging(verbose)
    cfg = _load(config, overlay, set_, workspace)
    try:
        harness = Harness(cfg, scale=scale)
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    t0 = time.perf_counter()
    harness.run()
    typer.echo((harness.root / "table.md").read_text())
    typer.echo(f"results, table and figures in {harness.root} ({time.perf_counter() - t0:.0f} s)")


def _register_people_commands() -> None:
    from synthloop.cli_people import label_app, serve

    app.add_typer(label_app, name="label")
    app.command()(serve)


_register_people_commands()


def _register_continuous_training_commands() -> None:
    from synthloop.cli_ct import register

    register(app)


_register_continuous_training_commands()


def _register_cad_commands() -> None:
    from synthloop.cli_cad import cad_app

    app.add_typer(cad_app, name="cad")


_register_cad_commands()


def _register_init_command() -> None:
    from synthloop.cli_init import INIT_HELP, init

    app.command(help=INIT_HELP)(init)


_register_init_command()


def _register_evaluate_command() -> None:
    from synthloop.cli_eval import evaluate

    app.command()(evaluate)


_register_evaluate_command()


def _register_stack_commands() -> None:
    from synthloop.cli_stack import stack_app

    app.add_typer(stack_app, name="stack")


_register_stack_commands()


def main() -> None:
    try:
        code = app(standalone_mode=False)
        # Outside standalone mode click hands typer.Exit(n) back as a return value.
        if isinstance(code, int) and code:
            sys.exit(code)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # Bad input and failed preconditions end with one clear line, not a traceback
        # (set SYNTHLOOP_DEBUG=1 for the traceback).
        if os.environ.get("SYNTHLOOP_DEBUG"):
            raise
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted: rerun the same command to resume", fg="yellow", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
