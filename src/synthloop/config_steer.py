"""What steers a cycle's training data, in the config (issue 16, parts 1 and 2). Re-exported by
``synthloop.config``: failure-steered rendering (below), and the sim-to-real gap with the
fine-tune's mix of renders (``SimToRealConfig``, ``FinetuneMixConfig``, at the end).

Failure-steered rendering:

Two pieces, each where it is versioned:

- ``DomainConfig.sampling_weights`` (the render config): ``{range field: [weight, ...]}``. A
  range is cut into ``len(weights)`` bins: equal widths of [min, max] for a continuous one
  (``camera_distance``, ...), runs of (nearly) equal length of the values min..max for a count
  (``distractors``, ...; at most one bin per value). A randomizer with weights draws a bin by
  weight, then a value uniformly inside it (synthesis/randomizers.py);
  without weights it draws exactly as before (the plan is byte-identical).
- ``steer:`` (``SteerConfig``): whether each cycle analyses the failures of the model it starts
  from, turns the held-out renders' failures into bounded weights (steering/weights.py) and
  renders a top-up batch with them for the cycle's fine-tune (stages/steer.py).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from synthloop.config_base import Strict

# DomainConfig range fields that a randomizer draws once per value with no other coupling.
STEERABLE_RANGES = ("camera_distance", "camera_elevation_deg", "camera_azimuth_deg",
                    "camera_roll_deg", "focal_length_mm", "hdri_strength", "hdri_rotation_deg",
                    "point_light_power_w", "point_light_kelvin")
STEERABLE_COUNTS = ("distractors", "parts_per_image", "point_lights")
STEERABLE = STEERABLE_RANGES + STEERABLE_COUNTS
MAX_BINS = 64


def check_sampling_weights(domain) -> None:
    """ValueError unless every key of ``domain.sampling_weights`` is steerable and its weights
    are finite, > 0, and 1..64 of them (counts: at most one bin per value)."""
    for key, weights in domain.sampling_weights.items():
        if key not in STEERABLE:
            raise ValueError(f"sampling_weights: '{key}' is not a steerable range; known: "
                             f"{list(STEERABLE)}")
        if not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"sampling_weights.{key}: weights must be finite and > 0 (a bin "
                             f"never sampled is a coverage hole), got {weights}")
        most = MAX_BINS
        if key in STEERABLE_COUNTS:  # a bin holds at least one of the values min..max
            r = getattr(domain, key)
            most = min(MAX_BINS, r.max - r.min + 1)
        if not 1 <= len(weights) <= most:
            raise ValueError(f"sampling_weights.{key}: 1..{most} bins, got {len(weights)}")


class SteerConfig(Strict):
    """``steer:`` -- failures steer the renderer (off by default).

    On: before each cycle's fine-tune, the model it starts from is run on the held-out renders
    (pretraining's early-stop slice, never trained on); failures (missed or false detections
    at ``min_score``, IoU ``iou``) are binned by the renders' sampled values of ``variables``;
    each bin's weight is its smoothed failure rate over the mean, bounded to
    [``floor``, ``ceiling``] x uniform (so no bin falls below ``floor`` of its uniform share:
    coverage never collapses); ``topup_images`` renders with those weights join the fine-tune.
    The validation photos' failures are analysed and reported (class, size, crowding,
    brightness, region), never fed into the weights (the gate's set stays unbiased).
    ``mode: uniform`` renders the same top-up without weights (the measurement's control).
    """

    enabled: bool = False
    mode: Literal["failures", "uniform"] = "failures"
    topup_images: int = Field(default=32, ge=0, le=100_000)  # 0: analyse and log weights only
    variables: list[str] = ["camera_distance", "camera_elevation_deg", "hdri_strength",
                            "point_light_power_w", "point_light_kelvin", "distractors"]
    bins: int = Field(default=4, ge=2, le=MAX_BINS)  # per range; counts: at most one per value
    floor: float = Field(default=0.5, gt=0.0, le=1.0)  # min weight, x uniform
    ceiling: float = Field(default=3.0, ge=1.0)  # max weight, x uniform
    prior: float = Field(default=2.0, ge=0.0)  # pseudo-images at the mean rate, per bin
    min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    iou: float = Field(default=0.5, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _known_variables(self) -> "SteerConfig":
        unknown = [v for v in self.variables if v not in STEERABLE]
        if unknown:
            raise ValueError(f"steer.variables: {unknown} not steerable; known: {list(STEERABLE)}")
        if len(set(self.variables)) != len(self.variables):
            raise ValueError(f"steer.variables: duplicates in {self.variables}")
        return self




class SimToRealConfig(Strict):
    """The per-cycle sim-to-real gap (stages/sim_to_real.py, monitoring/sim_to_real.py): the
    model to be fine-tuned embeds ``images`` renders and ``images`` real photos (drawn from the
    pool, which holds L; never val) and, per class, up to ``max_boxes_per_class`` ground-truth
    boxes of the renders and of L. Runs when ``enabled`` or when ``finetune_mix.mode`` is
    gap_rule (which needs it)."""

    enabled: bool = False
    images: int = Field(default=24, ge=4)
    max_boxes_per_class: int = Field(default=200, ge=4)
    folds: int = Field(default=5, ge=2)
    permutations: int = Field(default=100, ge=0)
    seed: int = 0


class FinetuneMixConfig(Strict):
    """Renders mixed into each cycle's fine-tune (stages/finetune.py). ``off``: L only, the
    paper. ``fixed``: ``synthetic_share`` of the training set are renders. ``gap_rule``:
    ``clip(base * (1 - (2 AUC - 1)) * n0 / (n0 + |L|), lo, hi)`` from the cycle's sim-to-real
    domain AUC (monitoring/sim_to_real.py: synthetic_share). The share holds for the epoch's
    composition (renders drawn once per cycle, seeded), not for each batch exactly."""

    mode: Literal["off", "fixed", "gap_rule"] = "off"
    synthetic_share: float = Field(default=0.25, ge=0.0, lt=1.0)
    base: float = Field(default=0.5, ge=0.0, lt=1.0)
    n0: float = Field(default=20.0, gt=0.0)
    lo: float = Field(default=0.0, ge=0.0, lt=1.0)
    hi: float = Field(default=0.5, ge=0.0, lt=1.0)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _yaml_off(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare `mode: off` as false
        if isinstance(data, dict) and data.get("mode") is False:
            return {**data, "mode": "off"}
        return data

    @model_validator(mode="after")
    def _bounds(self) -> "FinetuneMixConfig":
        if self.lo > self.hi:
            raise ValueError(f"finetune_mix: lo {self.lo} > hi {self.hi}")
        return self


__all__ = ["MAX_BINS", "STEERABLE", "STEERABLE_COUNTS", "STEERABLE_RANGES", "FinetuneMixConfig",
           "SimToRealConfig", "SteerConfig", "check_sampling_weights"]
