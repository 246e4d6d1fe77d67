"""The paper's experiment grid on any pipeline: ``synthloop experiment``.

Settings: ``R`` (real images only, starting from the configured weights: COCO for users with
internet, from scratch here) and ``S+R`` (starting from the synthetic model M0_S, the
pipeline's pretrain stage). Single-cycle runs: every (setting, strategy, seed, k) picks k pool
images with the strategy scored by the starting model, "labels" them with the pool's ground
truth (the simulated oracle) and fine-tunes a fixed step budget; a multi-cycle run repeats
score -> select -> fine-tune from the previous model. Every run is evaluated (COCO AP) on the
pipeline's validation set, which is never trained on, and is an MLflow run nested under the
experiment's parent run. Results go to ``<workspace>/experiments/<scale>/``: one JSON record a
run (finished runs are skipped on a rerun), ``results.json``, ``table.md`` (shaped like the
paper's Table A1) and ``fig6.png`` / ``fig8.png`` (shaped like its Figures 6 and 8).

R runs use ``random`` only, like the paper: margin or DBAL need a model that already detects
the parts, and an R model has seen none before its first labels.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlflow
import numpy as np
from mlflow import MlflowClient
from tqdm.auto import tqdm

from synthloop import tracking
from synthloop.active import get_strategy
from synthloop.config import ExperimentConfig, PipelineConfig, TrainConfig
from synthloop.data.coco import CocoDataset
from synthloop.io_utils import atomic_write_text
from synthloop.stages import pretrain, score
from synthloop.stages.pipeline import prepare_data
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)
UNCERTAINTY = ("margin", "entropy", "least_confidence", "dbal")
_NOT_RESULTS = {"monitor_val", "num_threads"}  # settings that do not change a run's numbers


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid. ``cycle`` 0 is a single-cycle run; multi-cycle runs count 1..n."""

    setting: str  # "R" or "S+R"
    strategy: str
    seed: int
    k: int
    cycle: int = 0

    @property
    def key(self) -> str:
        tail = f"-c{self.cycle}" if self.cycle else ""
        return f"{self.setting.replace('+', '')}-{self.strategy}-s{self.seed}-k{self.k}{tail}"


@dataclass
class RunResult:
    spec: dict[str, Any]
    labels_total: int
    labels_new: int
    metrics: dict[str, float]
    train_seconds: float
    steps: int
    selected: list[int]
    select_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def grid(exp: ExperimentConfig) -> list[RunSpec]:
    """The single-cycle runs, in the order they run (cheap settings first)."""
    specs: list[RunSpec] = []
    for setting in exp.settings:
        strategies = exp.real_only_strategies if setting == "R" else exp.strategies
        for strategy in strategies:
            seeds = exp.random_seeds if strategy == "random" else [exp.random_seeds[0]]
            for k in exp.ks:
                specs.extend(RunSpec(setting, strategy, seed, k) for seed in seeds)
    return specs


def steps_to_epochs(steps: int, num_images: int, batch_size: int) -> int:
    per_epoch = max(1, math.ceil(num_images / batch_size))
    return max(1, math.ceil(steps / per_epoch))


class Harness:
    """Runs the grid for one pipeline config; see the module docstring."""

    def __init__(self, cfg: PipelineConfig, *, scale: str, progress: bool = True,
                 log_fn: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.exp = cfg.experiment.at_scale(scale)
        self.scale = scale
        self.progress = progress
        self.say = log_fn or log.info
        self.ws = Workspace.of(cfg)
        self.root = self.ws.root / "experiments" / scale
        (self.root / "runs").mkdir(parents=True, exist_ok=True)
        (self.root / "models").mkdir(exist_ok=True)

    # ----------------------------------------------------------------- data, M0
    def prepare(self) -> None:
        cfg = self.cfg
        refs = prepare_data(cfg)
        self.val = CocoDataset.load(refs["val"].annotations, refs["val"].image_root)
        pool_images = refs["pool"].image_root
        self.pool_gt = CocoDataset.load(self.ws.oracle / "pool.json", pool_images)
        self.pool_ids = [im.id for im in self.pool_gt.images]
        self.m0_path = self.root / "models" / "m0_s.pt"
        if "S+R" in self.exp.settings or self.exp.multi_cycle is not None:
            m0 = pretrain.run(cfg, refs["synthetic"], refs["val"], progress=self.progress)
            if not self.m0_path.exists():
                tracking.setup(cfg)
                with tempfile.TemporaryDirectory() as tmp:
                    got = tracking.download_checkpoint(m0.uri, Path(tmp))
                    tmp_dst = self.m0_path.with_suffix(".tmp")
                    tmp_dst.write_bytes(got.read_bytes())
                    tmp_dst.replace(self.m0_path)
            self.m0_metrics = self._evaluate_file(self.m0_path, "m0_s.json")

    def _evaluate_file(self, path: Path, record: str) -> dict[str, float]:
        from synthloop.detection import evaluate, load_checkpoint

        rec = read_record(self.root / record)
        if rec:
            return rec["metrics"]
        model = load_checkpoint(path)
        metrics = evaluate(model, self.val, batch_size=2, progress=self.progress)
        write_record(self.root / record, {"metrics": metrics})
        return metrics

    # ----------------------------------------------------------------- scoring
    def _scores(self, model_path: Path, name: str, ids: list[int]):
        from synthloop.detection import load_checkpoint, predict_with_probs_and_features

        path = self.root / "models" / f"scores-{name}.npz"
        if not path.exists():
            net = load_checkpoint(model_path)
            out = predict_with_probs_and_features(net, self.pool_gt.without_annotations().subset(ids),
                                                  batch_size=self.cfg.active.batch_size,
                                                  progress=self.progress)
            score.save_scores(path, out)
        return score.load_scores(path)

    def _strategy(self, name: str):
        a = self.cfg.active
        params: dict[str, Any] = {}
        if name in UNCERTAINTY:
            params["aggregation"] = a.aggregation
        if name == "dbal":
            params["beta"] = a.beta
        return get_strategy(name, **params)

    def _select(self, spec: RunSpec, model_path: Path | None, labeled: set[int],
                score_name: str) -> tuple[list[int], float]:
        ids = list(self.pool_ids)
        if self.cfg.active.scope == "unlabeled":
            ids = [i for i in ids if i not in labeled]
        strategy = self._strategy(spec.strategy)
        probs = feats = None
        if spec.strategy != "random":
            if model_path is None:
                raise ValueError(f"{spec.key}: strategy {spec.strategy} needs a model to score with")
            sid, probs, feats = self._scores(model_path, score_name, ids)
            if sid != ids:
                raise RuntimeError(f"scores {score_name} are for other images; delete it")
        started = time.perf_counter()
        sel = strategy.select(ids, probs, feats, k=spec.k, rng_seed=spec.seed,
                              labeled_ids=frozenset(labeled))
        return [int(i) for i in sel.image_ids], time.perf_counter() - started

    # ----------------------------------------------------------------- training
    def _train_cfg(self, setting: str, num_images: int) -> TrainConfig:
        # Each setting trains with the recipe meant for its starting point: R starts from the
        # configured weights (the pretrain recipe), S+R from M0_S (the fine-tune recipe).
        base = self.cfg.pretrain if setting == "R" else self.cfg.finetune
        steps = self.exp.finetune_steps
        epochs = base.epochs if steps is None else steps_to_epochs(steps, num_images, base.batch_size)
        return base.model_copy(update={"epochs": epochs, "max_minutes": None,
                                       "eval_every_epochs": epochs})

    def _finetune(self, spec: RunSpec, init: Path | None, labeled: list[int],
                  out: Path) -> tuple[dict[str, float], float, int]:
        from synthloop.detection import build_detector, evaluate, load_checkpoint, train

        model = (load_checkpoint(init) if init is not None else
                 build_detector(cfg=self.cfg.detector, num_classes=len(self.cfg.class_names)))
        train_ds = self.pool_gt.subset(sorted(labeled))
        tcfg = self._train_cfg(spec.setting, len(train_ds.images))
        tcfg = tcfg.model_copy(update={"seed": tcfg.seed + spec.seed})
        with tempfile.TemporaryDirectory() as ckdir:
            result = train(model, train_ds, cfg=tcfg, val_ds=None, checkpoint_dir=Path(ckdir),
                           progress=self.progress)
            metrics = evaluate(model, self.val, batch_size=2, progress=self.progress)
            if out is not None:
                from synthloop.detection import save_checkpoint

                save_checkpoint(model, out, cfg=model.detector_cfg, num_classes=model.num_classes)
        return metrics, result.seconds, result.steps

    # ----------------------------------------------------------------- runs
    def _record_path(self, spec: RunSpec) -> Path:
        return self.root / "runs" / f"{spec.key}.json"

    def _log_run(self, parent: str, spec: RunSpec, res: RunResult) -> None:
        with mlflow.start_run(run_name=spec.key, nested=True, parent_run_id=parent,
                              tags={"stage": "experiment", "scale": self.scale}):
            mlflow.log_params({**{f"exp.{k}": v for k, v in asdict(spec).items()},
                               "labels_total": res.labels_total, "steps": res.steps})
            mlflow.log_metrics({f"val_{k}": v for k, v in res.metrics.items()})
            mlflow.log_metric("labels_new", res.labels_new)
            mlflow.log_metric("train_seconds", res.train_seconds)
            mlflow.log_dict({"selected": res.selected}, "selected.json")

    def _fingerprint(self) -> str:
        """What a finished run's numbers depend on besides its spec: a change reruns it."""
        import hashlib
        import json

        blob = json.dumps([self.cfg.detector.model_dump(mode="json"),
                           self.cfg.pretrain.model_dump(mode="json", exclude=_NOT_RESULTS),
                           self.cfg.finetune.model_dump(mode="json", exclude=_NOT_RESULTS),
                           self.cfg.active.model_dump(mode="json", include={"aggregation", "beta", "scope"}),
                           self.exp.finetune_steps], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _done(self, spec: RunSpec) -> RunResult | None:
        rec = read_record(self._record_path(spec))
        if not rec:
            return None
        if rec.get("extra", {}).get("fingerprint") != self._fingerprint():
            self.say(f"{spec.key}: settings changed since it ran; running it again")
            return None
        return RunResult(**rec)

    def run_single(self, spec: RunSpec, parent: str) -> RunResult:
        done = self._done(spec)
        if done:
            return done
        init = self.m0_path if spec.setting == "S+R" else None
        chosen, sel_s = self._select(spec, init, set(), "m0_s")
        metrics, seconds, steps = self._finetune(spec, init, chosen, None)
        res = RunResult(asdict(spec), len(chosen), len(chosen), metrics, seconds, steps, chosen,
                        sel_s, extra={"fingerprint": self._fingerprint()})
        self._log_run(parent, spec, res)
        write_record(self._record_path(spec), asdict(res))
        return res

    def run_multi(self, parent: str) -> list[RunResult]:
        mc = self.exp.multi_cycle
        out: list[RunResult] = []
        model_path, labeled = self.m0_path, []
        for t in range(1, mc.cycles + 1):
            spec = RunSpec("S+R", mc.strategy, self.exp.random_seeds[0], mc.k, cycle=t)
            ck = self.root / "models" / f"{spec.key}.pt"
            done = self._done(spec)
            if done and ck.exists():
                res = done
            else:
                # cycle 1 scores with M0_S, like the single-cycle runs: reuse their scores
                score_name = "m0_s" if model_path == self.m0_path else spec.key
                picked, sel_s = self._select(spec, model_path, set(labeled), score_name)
                new = [i for i in picked if i not in labeled]
                labeled = labeled + new
                metrics, seconds, steps = self._finetune(spec, model_path, labeled, ck)
                res = RunResult(asdict(spec), len(labeled), len(new), metrics, seconds, steps,
                                picked, sel_s, extra={"fingerprint": self._fingerprint()})
                self._log_run(parent, spec, res)
                write_record(self._record_path(spec), asdict(res))
            labeled = sorted(set(labeled) | set(res.selected))
            model_path = ck
            out.append(res)
            self.say(f"multi-cycle {mc.strategy} cycle {t}: {res.labels_total} labels "
                     f"(+{res.labels_new}), AP {res.metrics['AP']:.3f}")
        return out

    def run(self) -> dict[str, Any]:
        from synthloop.experiments.report import write_report

        self.prepare()
        tracking.setup(self.cfg)
        parent_rec = read_record(self.root / "parent_run.json")
        client = MlflowClient()
        if parent_rec:
            parent = parent_rec["run_id"]
        else:
            exp_id = tracking.setup(self.cfg)
            parent = client.create_run(exp_id, run_name=f"experiment-{self.scale}",
                                       tags={"stage": "experiment", "scale": self.scale}).info.run_id
            write_record(self.root / "parent_run.json", {"run_id": parent})
        specs = grid(self.exp)
        started = time.monotonic()
        single: list[RunResult] = []
        bar = tqdm(specs, desc=f"experiment ({self.scale})", unit="run", disable=not self.progress)
        for spec in bar:
            bar.set_postfix_str(spec.key)
            res = self.run_single(spec, parent)
            single.append(res)
            self.say(f"{spec.key}: AP {res.metrics['AP']:.3f} AP50 {res.metrics['AP50']:.3f}")
        multi = self.run_multi(parent) if self.exp.multi_cycle is not None else []
        summary = {"pipeline": self.cfg.name, "scale": self.scale,
                   "experiment": self.exp.model_dump(mode="json"),
                   "m0_s": getattr(self, "m0_metrics", None),
                   "val_images": len(self.val.images), "pool_images": len(self.pool_ids),
                   "proxy_real": self.cfg.proxy_real,
                   "detector": self.cfg.detector.model_dump(mode="json"),
                   "single": [asdict(r) for r in single], "multi": [asdict(r) for r in multi],
                   "wall_seconds_this_call": time.monotonic() - started}
        atomic_write_text(self.root / "results.json", _dumps(summary))
        files = write_report(summary, self.root)
        for path in files:
            client.log_artifact(parent, str(path))
        client.log_artifact(parent, str(self.root / "results.json"))
        client.set_terminated(parent)
        return summary


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=1, default=float)


__all__ = ["Harness", "RunResult", "RunSpec", "grid", "steps_to_epochs"]
