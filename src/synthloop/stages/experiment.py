"""The paper's experiment grid on any pipeline: ``synthloop experiment``.

An orchestrator beside the cycle (stages/pipeline.py): it calls the stages (prepare, pretrain,
score) and the library; the grid, folds, statistics and report it uses are pure and live in
synthloop/experiments/.

Settings: ``R`` (real images only, starting from the configured weights: COCO or ImageNet
backbones where configured, else from scratch) and ``S+R`` (starting from the synthetic model
M0_S, the pipeline's pretrain stage, trained on renders only). Single-cycle runs: every
(setting, strategy, k, seed, fold) picks k pool images with the strategy scored by the starting
model, "labels" them with the pool's ground truth (the simulated oracle) and fine-tunes; a
multi-cycle chain (one a seed and fold) repeats score -> select -> fine-tune from the previous
model. The seed seeds the fine-tuning, random's pick and DBAL's k-means. The budget grows with
the labelled set (``finetune_epochs`` over it, at least ``min_steps``) or is fixed
(``finetune_steps``); nothing early-stops on the validation set, which is never trained on.

Folds (``experiment.folds`` > 1): pool and validation photos are pooled and split in memory
(experiments/folds.py); each fold is the validation set once, the rest the pool, and every
cell runs once per fold. M0_S is shared (renders only); its scores cover all the photos.

Every run is evaluated (COCO AP) and is an MLflow run nested under the experiment's parent run.
Results go to ``<workspace>/experiments/<scale>/``: one JSON record a run (finished runs are
skipped on a rerun while their settings and fold are unchanged), ``results.json`` (with
standard errors, bootstrap intervals and the labels each strategy needs to match random:
experiments/analysis.py; each run's ``label_seconds``: its picks' boxes under ``labeling.cost``,
experiments/label_cost.py), ``table.md`` and ``fig6.png`` / ``fig8.png`` /
``fig_label_minutes.png`` (experiments/report.py).

R runs use ``random`` only, like the paper: margin or DBAL need a model that already detects
the parts, and an R model has seen none before its first labels. Every strategy gets the
parameters under ``active:`` it declares (synthloop.active's registry), like a cycle's query.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import mlflow
import numpy as np
from mlflow import MlflowClient
from tqdm.auto import tqdm

from synthloop import tracking, tracking_recovery
from synthloop.active import get_strategy, strategy_class
from synthloop.config import PipelineConfig, TrainConfig
from synthloop.data.coco import CocoDataset
from synthloop.experiments.folds import Fold, names_digest, rotation_folds, union_dataset
from synthloop.experiments.grid import (RunResult, RunSpec, finetune_budget, fold_indices, grid,
                                        multi_cycle_chains)
from synthloop.experiments.label_cost import attach_label_cost
from synthloop.io_utils import atomic_write_text
from synthloop.stages import pretrain, score
from synthloop.stages.pipeline import prepare_data
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)
_NOT_RESULTS = {"monitor_val", "num_threads"}
WARMUP_SHARE = 5  # a run's warm-up is at most 1/WARMUP_SHARE of its steps  # settings that do not change a run's numbers


class Harness:
    """Runs the grid for one pipeline config; see the module docstring."""

    def __init__(self, cfg: PipelineConfig, *, scale: str, progress: bool = True,
                 log_fn: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.exp = cfg.experiment.at_scale(scale)
        from synthloop.detection.device import resolve_device

        self.device = resolve_device(cfg.runtime.device)  # every model of the grid runs there
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
        val = CocoDataset.load(refs["val"].annotations, refs["val"].image_root)
        pool = CocoDataset.load(self.ws.oracle / "pool.json", refs["pool"].image_root)
        self.folds = {f.index: f for f in rotation_folds(pool, val, folds=self.exp.folds,
                                                          seed=self.exp.fold_seed)}
        # M0_S scores every photo any fold may pick from, once
        self.m0_pool = pool if self.exp.folds == 1 else union_dataset(pool, val)
        self.m0_scores = "m0_s" if self.exp.folds == 1 else f"m0_s-{names_digest(self.m0_pool)}"
        smallest = min(len(f.pool.images) for f in self.folds.values())
        if max(self.exp.ks) > smallest:
            raise ValueError(f"k = {max(self.exp.ks)} is more than the {smallest} images of the "
                             "smallest pool; lower experiment ks or folds")
        self.m0_path = self.root / "models" / "m0_s.pt"
        self.m0_metrics: dict[int, dict[str, float]] = {}
        if "S+R" in self.exp.settings or self.exp.multi_cycle is not None:
            m0 = pretrain.run(cfg, refs["synthetic"], refs["val"], progress=self.progress)
            if not self.m0_path.exists():
                tracking.setup(cfg)
                with tempfile.TemporaryDirectory() as tmp:
                    got = tracking.download_checkpoint(m0.uri, Path(tmp))
                    tmp_dst = self.m0_path.with_suffix(".tmp")
                    tmp_dst.write_bytes(got.read_bytes())
                    tmp_dst.replace(self.m0_path)
            self.m0_metrics = {i: self._evaluate_m0(f) for i, f in self.folds.items()}

    def _evaluate_m0(self, fold: Fold) -> dict[str, float]:
        from synthloop.detection import evaluate, load_checkpoint

        path = self.root / ("m0_s.json" if fold.index == 0 else f"m0_s-f{fold.index}.json")
        rec = read_record(path)
        if rec and rec.get("fold") == fold.tag:
            return rec["metrics"]
        model = load_checkpoint(self.m0_path, device=self.device)
        metrics = evaluate(model, fold.val, batch_size=2, progress=self.progress)
        write_record(path, {"metrics": metrics, "fold": fold.tag})
        return metrics

    # ----------------------------------------------------------------- scoring
    def _scores(self, model_path: Path, name: str, ds: CocoDataset, ids: list[int]):
        """(probs, features) of the images ``ids`` of ``ds``, cached as ``scores-<name>``."""
        from synthloop.detection import load_checkpoint, predict_with_probs_and_features

        path = self.root / "models" / f"scores-{name}.npz"
        if not path.exists():
            net = load_checkpoint(model_path, device=self.device)
            wanted = [im.id for im in ds.images] if name == self.m0_scores else ids
            out = predict_with_probs_and_features(net, ds.without_annotations().subset(wanted),
                                                  batch_size=self.cfg.active.batch_size,
                                                  progress=self.progress)
            score.save_scores(path, out)
        sid, probs, feats = score.load_scores(path)
        where = {int(i): n for n, i in enumerate(sid)}
        if any(i not in where for i in ids):
            raise RuntimeError(f"scores {name} are for other images; delete {path}")
        rows = [where[i] for i in ids]
        return [probs[r] for r in rows], feats[rows]

    def _strategy(self, name: str):
        return get_strategy(name, **self.cfg.active.strategy_params(name))

    def _select(self, spec: RunSpec, fold: Fold, model_path: Path | None, labeled: set[int],
                ) -> tuple[list[int], float]:
        ids = [im.id for im in fold.pool.images]
        if self.cfg.active.scope == "unlabeled":
            ids = [i for i in ids if i not in labeled]
        strategy = self._strategy(spec.strategy)
        probs = feats = None
        if strategy_class(spec.strategy).needs_model():
            if model_path is None:
                raise ValueError(f"{spec.key}: strategy {spec.strategy} needs a model to score with")
            if model_path == self.m0_path:
                probs, feats = self._scores(model_path, self.m0_scores, self.m0_pool, ids)
            else:
                probs, feats = self._scores(model_path, spec.key, fold.pool, ids)
        started = time.perf_counter()
        sel = strategy.select(ids, probs, feats, k=spec.k, rng_seed=spec.seed,
                              labeled_ids=frozenset(labeled))
        return [int(i) for i in sel.image_ids], time.perf_counter() - started

    # ----------------------------------------------------------------- training
    def _train_cfg(self, setting: str, num_images: int, seed: int) -> TrainConfig:
        # Each setting trains with the recipe meant for its starting point: R starts from the
        # configured weights (the pretrain recipe), S+R from M0_S (the fine-tune recipe).
        base = self.cfg.pretrain if setting == "R" else self.cfg.finetune
        epochs, steps = finetune_budget(num_images, base.batch_size,
                                        epochs=self.exp.finetune_epochs,
                                        steps=self.exp.finetune_steps, min_steps=self.exp.min_steps)
        # warm-up takes at most a fifth of a run: R's recipe warms up over 30 steps, which would
        # be the whole of a 30-step run on 10 labels
        warmup = min(base.warmup_steps, steps // WARMUP_SHARE)
        # R trains on real photos only: the pretrain recipe's crop_scale matches the renders'
        # part sizes to the photos' and would show real parts smaller than they are.
        return base.model_copy(update={"epochs": epochs, "max_minutes": None, "warmup_steps": warmup,
                                       "eval_every_epochs": epochs, "seed": base.seed + seed,
                                       "crop_scale": None})

    def _finetune(self, spec: RunSpec, fold: Fold, init: Path | None, labeled: list[int],
                  out: Path | None) -> tuple[dict[str, float], float, int]:
        from synthloop.detection import evaluate, save_checkpoint, train

        train_ds = fold.pool.subset(sorted(labeled))
        tcfg = self._train_cfg(spec.setting, len(train_ds.images), spec.seed)
        model = self._start_model(init, tcfg.seed)
        with tempfile.TemporaryDirectory() as ckdir:
            result = train(model, train_ds, cfg=tcfg, val_ds=None, checkpoint_dir=Path(ckdir),
                           progress=self.progress, runtime=self.cfg.runtime)
        metrics = evaluate(model, fold.val, batch_size=2, progress=self.progress)
        if out is not None:
            save_checkpoint(model, out, cfg=model.detector_cfg, num_classes=model.num_classes)
        return metrics, result.seconds, result.steps

    def _start_model(self, init: Path | None, seed: int):
        """The model a run starts from: ``init``'s weights, or the configured ones with new
        heads drawn from the run's seed (not from whatever the process drew before: an R run
        must be the same run after a restart or in another order)."""
        from synthloop.detection import build_detector, load_checkpoint
        from synthloop.detection.training import seed_everything

        if init is not None:
            return load_checkpoint(init, device=self.device)
        seed_everything(seed)
        return build_detector(cfg=self.cfg.detector, num_classes=len(self.cfg.class_names),
                              device=self.device)

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

    def _fingerprint(self, spec: RunSpec, fold: Fold) -> str:
        """What a finished run's numbers depend on besides its spec: a change reruns it
        (the strategy's own parameters: a new beta reruns DBAL, not random)."""
        import hashlib
        import json

        e, a = self.exp, self.cfg.active
        blob = json.dumps([self.cfg.detector.model_dump(mode="json"),
                           self.cfg.pretrain.model_dump(mode="json", exclude=_NOT_RESULTS),
                           self.cfg.finetune.model_dump(mode="json", exclude=_NOT_RESULTS),
                           {"scope": a.scope, **a.strategy_params(spec.strategy)},
                           [e.finetune_steps, e.finetune_epochs, e.min_steps], fold.tag],
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _done(self, spec: RunSpec) -> RunResult | None:
        rec = read_record(self._record_path(spec))
        if not rec:
            return None
        if rec.get("extra", {}).get("fingerprint") != self._fingerprint(spec,
                                                                        self.folds[spec.fold]):
            self.say(f"{spec.key}: settings or fold changed since it ran; running it again")
            return None
        return RunResult(**rec)

    def _finish(self, parent: str, spec: RunSpec, res: RunResult) -> RunResult:
        self._log_run(parent, spec, res)
        write_record(self._record_path(spec), asdict(res))
        return res

    def run_single(self, spec: RunSpec, parent: str) -> RunResult:
        done = self._done(spec)
        if done:
            return done
        fold = self.folds[spec.fold]
        init = self.m0_path if spec.setting == "S+R" else None
        chosen, sel_s = self._select(spec, fold, init, set())
        metrics, seconds, steps = self._finetune(spec, fold, init, chosen, None)
        return self._finish(parent, spec, RunResult(
            asdict(spec), len(chosen), len(chosen), metrics, seconds, steps, chosen, sel_s,
            extra={"fingerprint": self._fingerprint(spec, fold)}))

    def run_chain(self, chain: list[RunSpec], parent: str) -> list[RunResult]:
        """Cycles 1..n of one seed and fold, each from the previous cycle's model. Only the
        newest checkpoint of a chain is kept; a rerun continues from it (or starts over)."""
        fold = self.folds[chain[0].fold]
        ckpt = {s.cycle: self.root / "models" / f"{s.key}.pt" for s in chain}
        out: list[RunResult] = []
        for spec in chain:
            done = self._done(spec)
            if done is None:
                break
            out.append(done)
        if out and len(out) < len(chain) and not ckpt[len(out)].exists():
            out = []  # the model to continue from is gone: start the chain over
        labeled = sorted({i for r in out for i in r.selected})
        model_path = ckpt[len(out)] if out else self.m0_path
        for spec in chain[len(out):]:
            # scores of an unfinished cycle may be a replaced model's: score afresh
            (self.root / "models" / f"scores-{spec.key}.npz").unlink(missing_ok=True)
            picked, sel_s = self._select(spec, fold, model_path, set(labeled))
            new = [i for i in picked if i not in labeled]
            labeled = labeled + new
            metrics, seconds, steps = self._finetune(spec, fold, model_path, labeled,
                                                     ckpt[spec.cycle])
            out.append(self._finish(parent, spec, RunResult(
                asdict(spec), len(labeled), len(new), metrics, seconds, steps, picked, sel_s,
                extra={"fingerprint": self._fingerprint(spec, fold)})))
            if model_path != self.m0_path:
                model_path.unlink(missing_ok=True)
            model_path = ckpt[spec.cycle]
            labeled = sorted(set(labeled) | set(picked))
        for res in out:
            s = res.spec
            self.say(f"multi-cycle {s['strategy']} seed {s['seed']} fold {s['fold']} cycle "
                     f"{s['cycle']}: {res.labels_total} labels (+{res.labels_new}), "
                     f"AP {res.metrics['AP']:.3f}")
        return out

    def _parent_run(self, client: MlflowClient) -> str:
        parent_rec = read_record(self.root / "parent_run.json")
        if parent_rec:
            tracking_recovery.reopen_run(client, parent_rec["run_id"])
            return parent_rec["run_id"]
        exp_id = tracking.setup(self.cfg)
        parent = client.create_run(exp_id, run_name=f"experiment-{self.scale}",
                                   tags={"stage": "experiment", "scale": self.scale,
                                         **tracking.process_tags()}).info.run_id
        write_record(self.root / "parent_run.json", {"run_id": parent})
        return parent

    def run(self) -> dict[str, Any]:
        from synthloop.experiments.analysis import analyse
        from synthloop.experiments.report import write_report

        self.prepare()
        tracking.setup(self.cfg)
        client = MlflowClient()
        parent = self._parent_run(client)
        started = time.monotonic()
        single: list[RunResult] = []
        specs = grid(self.exp)
        bar = tqdm(specs, desc=f"experiment ({self.scale})", unit="run", disable=not self.progress)
        for spec in bar:
            bar.set_postfix_str(spec.key)
            res = self.run_single(spec, parent)
            single.append(res)
            self.say(f"{spec.key}: AP {res.metrics['AP']:.3f} AP50 {res.metrics['AP50']:.3f}")
        multi = [r for chain in multi_cycle_chains(self.exp) for r in self.run_chain(chain, parent)]
        summary = self._summary(single, multi)
        summary["wall_seconds_this_call"] = time.monotonic() - started
        summary["statistics"] = analyse(summary)
        atomic_write_text(self.root / "results.json", _dumps(summary))
        files = write_report(summary, self.root)
        for path in files:
            client.log_artifact(parent, str(path))
        client.log_artifact(parent, str(self.root / "results.json"))
        client.set_terminated(parent)
        return summary

    def _summary(self, single: list[RunResult], multi: list[RunResult]) -> dict[str, Any]:
        folds = [{"fold": i, "val_images": len(f.val.images), "pool_images": len(f.pool.images),
                  "val_files": sorted(im.file_name for im in f.val.images),
                  "val_ids": sorted(im.id for im in f.val.images),
                  "m0_s": self.m0_metrics.get(i)} for i, f in self.folds.items()]
        pools = {i: f.pool for i, f in self.folds.items()}  # the oracle's boxes cost the picks
        m0 = None
        if self.m0_metrics:  # pooled over folds: the mean of each metric
            m0 = {k: float(np.mean([m[k] for m in self.m0_metrics.values()]))
                  for k in next(iter(self.m0_metrics.values()))}
        return {"pipeline": self.cfg.name, "scale": self.scale,
                "experiment": self.exp.model_dump(mode="json"), "m0_s": m0, "folds": folds,
                "val_images": folds[0]["val_images"], "pool_images": folds[0]["pool_images"],
                "proxy_real": self.cfg.proxy_real,
                "detector": self.cfg.detector.model_dump(mode="json"),
                "label_cost": self.cfg.labeling.cost.model_dump(mode="json"),
                "single": attach_label_cost([asdict(r) for r in single], pools,
                                            self.cfg.labeling.cost),
                "multi": attach_label_cost([asdict(r) for r in multi], pools,
                                           self.cfg.labeling.cost, chained=True)}


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=1, default=float)


__all__ = ["Harness", "RunResult", "RunSpec", "finetune_budget", "fold_indices", "grid",
           "multi_cycle_chains"]
