"""``SYNTHLOOP_*`` environment overrides: the YAML < overlays < environment < ``--set``."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthloop.cli import app
from synthloop.config import ConfigError, env_overrides, load_config
from tests_support import DEMO_CONFIG


def test_environment_sits_between_the_overlays_and_set(tmp_path):
    overlay = tmp_path / "site.yaml"
    overlay.write_text("tracking: {uri: 'http://overlay:5000'}\nactive: {k: 7}\n")
    env = {"SYNTHLOOP_TRACKING__URI": "http://env:5000", "SYNTHLOOP_ACTIVE__K": "9"}
    cfg = load_config(DEMO_CONFIG, overlays=[overlay], environ=env)
    assert cfg.tracking_uri == "http://env:5000" and cfg.active.k == 9  # parsed like --set: int
    cfg = load_config(DEMO_CONFIG, overlays=[overlay], environ=env, overrides=["active.k=25"])
    assert cfg.active.k == 25 and cfg.tracking_uri == "http://env:5000"
    assert load_config(DEMO_CONFIG, overlays=[overlay], environ={}).active.k == 7


def test_nested_keys_with_underscores_and_top_level_keys():
    env = {"SYNTHLOOP_TRACKING__REGISTERED_MODEL": "blades", "SYNTHLOOP_WORKSPACE": "/srv/ws",
           "SYNTHLOOP_DASK__N_WORKERS": "3", "SYNTHLOOP_RUNTIME__DEVICE": "cpu"}
    cfg = load_config(DEMO_CONFIG, environ=env)
    assert cfg.registered_model_name == "blades" and cfg.workspace == Path("/srv/ws")
    assert cfg.dask.n_workers == 3 and cfg.runtime.device == "cpu"


def test_process_switches_are_not_config():
    env = {"SYNTHLOOP_DEBUG": "1", "SYNTHLOOP_STRICT": "1", "SYNTHLOOP_CYCLE_LIMIT": "x",
           "SYNTHLOOP_BLENDER_PYTHON": "/opt/bpy", "OTHER__KEY": "1"}
    assert env_overrides(env) == []
    assert load_config(DEMO_CONFIG, environ=env).active.k == load_config(DEMO_CONFIG, environ={}).active.k


@pytest.mark.parametrize("name, message", [
    ("SYNTHLOOP_TRACKING__URIX", "environment variable SYNTHLOOP_TRACKING__URIX: 'tracking.urix' "
                                 "is not a config key (tracking has: "),
    ("SYNTHLOOP_TRAKING__URI", "'traking.uri' is not a config key (the top level has: "),
    ("SYNTHLOOP_ACTIVE__K__SUB", "SYNTHLOOP_ACTIVE__K__SUB: 'active.k' is a value, not a section"),
])
def test_an_unknown_key_is_a_clear_error(name, message):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO_CONFIG, environ={name: "1"})
    assert message in str(err.value)


def test_a_wrong_value_names_the_key():
    with pytest.raises(ConfigError, match="active.k"):
        load_config(DEMO_CONFIG, environ={"SYNTHLOOP_ACTIVE__K": "many"})


def test_the_cli_applies_them_and_stops_on_a_bad_one(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "SYNTHLOOP_" in result.output
    result = runner.invoke(app, ["label", "status", "-c", str(DEMO_CONFIG)],
                           env={"SYNTHLOOP_WORKSPACE": str(tmp_path / "ws"),
                                "SYNTHLOOP_ACTIVE__KK": "3"})
    assert result.exit_code == 2
    assert "SYNTHLOOP_ACTIVE__KK: 'active.kk' is not a config key" in result.output
    assert not (tmp_path / "ws").exists()  # nothing half-made
