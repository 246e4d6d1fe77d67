"""The ``synthloop`` command line. Each command loads a pipeline YAML and calls stages.

Config precedence: the YAML < ``--overlay`` files < ``SYNTHLOOP_*`` environment variables
(``SYNTHLOOP_TRACKING__URI=...``: ``__`` nests) < ``--set key.sub=value`` flags.
The shared options live in cli_options.py; the sub-CLIs (cli_*.py) import that, never this.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

import click
import typer

from synthloop.cli_options import ConfigOpt, OverlayOpt, SetOpt, WorkspaceOpt, load_or_exit
from synthloop.log_setup import setup_logging

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="synthloop: CAD renders + deep active learning for industrial detectors. "
                  "Config: the YAML < --overlay < SYNTHLOOP_* environment variables "
                  "(SYNTHLOOP_TRACKING__URI=...: '__' nests, values parsed like --set) < --set.")


@app.command()
def demo(config: Path = ConfigOpt, cycles: Optional[int] = typer.Option(
             None, help="DAL cycles to run (default: active.cycles of the config)."),
         workspace: Optional[Path] = WorkspaceOpt, overlay: list[Path] = OverlayOpt,
         set_: list[str] = SetOpt,
         verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Run the whole pipeline: render -> pretrain M0 -> DAL cycles with the promotion gate.

    Reruns resume: finished renders, models and cycles are skipped.
    """
    from synthloop.stages.pipeline import run_pipeline

    setup_logging(verbose)
    cfg = load_or_exit(config, overlay, set_, workspace)
    t0 = time.perf_counter()
    rows = run_pipeline(cfg, cycles=cycles)
    print_report(cfg, rows, time.perf_counter() - t0)


def print_report(cfg, rows, seconds: float) -> None:
    from synthloop.stages.pipeline import run_report

    typer.echo(run_report(cfg, rows, seconds))


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
    setup_logging(False)
    if num_images is not None:
        set_ = [*set_, f"{domain}.num_images={num_images}"]
    cfg = load_or_exit(config, overlay, set_, workspace)
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

    setup_logging(False)
    cfg = load_or_exit(config, overlay, set_, workspace)
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
    from synthloop.stages.experiment import Harness

    setup_logging(verbose)
    cfg = load_or_exit(config, overlay, set_, workspace)
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
