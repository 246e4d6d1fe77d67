from pathlib import Path

import pytest

from synthloop.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "pipelines" / "demo.yaml"


def test_demo_config_loads_with_defaults():
    cfg = load_config(DEMO)
    assert cfg.class_names == ["blade"]
    assert cfg.active.strategy == "dbal" and cfg.active.beta == 2.0
    assert cfg.tracking_uri.startswith("sqlite:///") and cfg.tracking_uri.endswith("mlruns.db")


def test_overrides_and_overlays_take_precedence(tmp_path):
    overlay = tmp_path / "site.yaml"
    overlay.write_text("active: {k: 7}\ntracking: {uri: 'http://127.0.0.1:5000'}\n")
    cfg = load_config(DEMO, overlays=[overlay], overrides=["active.k=25", "workspace=/tmp/x"])
    assert cfg.active.k == 25 and cfg.tracking_uri == "http://127.0.0.1:5000"
    assert cfg.workspace == Path("/tmp/x")


@pytest.mark.parametrize("override, message", [
    ("active.kk=3", "active: kk: Extra inputs are not permitted"),
    ("active.k=many", "active.k"),
    ("active.strategy=best", "active.strategy"),
    ("synthetic.camera_distance={min: 2, max: 1}", "impossible range"),
    ("synthetic.num_images=0", "synthetic.num_images"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, overrides=[override])
    assert str(DEMO) in str(err.value) and message in str(err.value)


def test_yaml_errors_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="override"):
        load_config(DEMO, overrides=["active.k"])
