"""What every ``synthloop`` command shares: the config options and loading the config.

cli.py and the sub-CLIs (cli_ct, cli_eval, cli_init, cli_people) import this module; it imports
none of them, so the command modules form no import cycle.

Config precedence: the YAML < ``--overlay`` files < ``SYNTHLOOP_*`` environment variables <
``--set key.sub=value`` flags (``synthloop.config.load_config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

DEFAULT_CONFIG = Path("pipelines/demo.yaml")
CONFIG_HELP = "Pipeline YAML (pipelines/*.yaml)."
SET_HELP = ("Override a config value, e.g. --set active.k=25 (repeatable; wins over "
            "SYNTHLOOP_* environment variables such as SYNTHLOOP_TRACKING__URI=...).")
OVERLAY_HELP = "Site overlay YAML merged over the pipeline file (repeatable)."
WORKSPACE_HELP = "Workspace folder (overrides the YAML)."

ConfigOpt = typer.Option(DEFAULT_CONFIG, "--config", "-c", help=CONFIG_HELP)
SetOpt = typer.Option([], "--set", help=SET_HELP)
OverlayOpt = typer.Option([], "--overlay", help=OVERLAY_HELP)
WorkspaceOpt = typer.Option(None, "--workspace", "-w", help=WORKSPACE_HELP)


def load_or_exit(config: Path, overlay: list[Path], overrides: list[str],
                 workspace: Optional[Path]) -> Any:
    """The pipeline config (``--workspace`` is one more ``--set``); a bad config or a missing
    GPU ends the command with one line and exit status 2."""
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
