"""Every monitoring preset is a valid overlay of the demo pipeline."""

from __future__ import annotations

import pytest

from synthloop.config import load_config
from tests_support import DEMO_CONFIG, ROOT

PRESETS = sorted((ROOT / "monitoring" / "presets").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_loads(preset):
    cfg = load_config(DEMO_CONFIG, overlays=[preset])
    assert cfg.monitoring.stat_alpha < 0.1 and cfg.trigger.pool_growth_min >= 1


def test_there_are_presets():
    assert {"default", "sensitive", "camera-s3"} <= {p.stem for p in PRESETS}
