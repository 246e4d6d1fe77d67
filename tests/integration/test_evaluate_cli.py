"""`synthloop evaluate` on tiny labelled folders (100x100 PNGs): metrics and figures, the clear
refusals (unknown classes, empty folders, images without labels), and registry models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from synthloop.cli import app
from synthloop.config import DetectorConfig
from synthloop.detection import build_detector, save_checkpoint
from synthloop.stages.evaluate import evaluate_folder, load_labelled_folder
from synthloop.stages.model_source import ModelUnderTest

MODEL_CLASSES = ["bolt", "nut"]
# image stem -> YOLO lines (class index into the folder's own class list, xc, yc, w, h)
LABELS = {"a": [(0, 0.3, 0.3, 0.3, 0.3), (1, 0.7, 0.7, 0.2, 0.2)],
          "b": [(0, 0.5, 0.5, 0.4, 0.3)],
          "c": [(1, 0.25, 0.6, 0.2, 0.3), (0, 0.7, 0.3, 0.3, 0.2)]}


def write_yolo(root: Path, classes: list[str], labels: dict = LABELS, *,
               unlabelled: tuple[str, ...] = ()) -> Path:
    """images/<stem>.png (100x100, noise on a flat grey that tells the images apart) +
    labels/<stem>.txt + classes.txt; ``unlabelled`` stems get an image and no label file."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    rng = np.random.default_rng(0)
    for n, stem in enumerate([*labels, *unlabelled]):
        pixels = np.full((100, 100, 3), 40 * (n + 1), np.uint8)
        pixels[::7] = rng.integers(0, 255, (len(pixels[::7]), 100, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{stem}.png")
    for stem, lines in labels.items():
        (root / "labels" / f"{stem}.txt").write_text(
            "".join(" ".join(str(v) for v in line) + "\n" for line in lines))
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained two-class detector that boxes anything (box_score_thresh 0)."""
    torch.manual_seed(0)
    det = DetectorConfig(min_size=64, max_size=96, box_score_thresh=0.0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    return save_checkpoint(build_detector(cfg=det, num_classes=2), path, cfg=det, num_classes=2,
                           extra={"class_names": MODEL_CLASSES})


def invoke(*args: str):
    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def test_writes_metrics_pr_plot_and_overlays(tmp_path, checkpoint):
    data = write_yolo(tmp_path / "photos", ["nut", "bolt"])  # other order than the model's
    out = tmp_path / "out"
    result = invoke("--model", checkpoint, "--data", data, "--out", out, "--examples", "2")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "AP_bolt", "AP_nut"} <= set(record["metrics"])
    assert set(record["per_class"]) == set(MODEL_CLASSES)
    assert record["per_class"]["nut"]["gt_boxes"] == 3 and record["per_class"]["bolt"]["gt_boxes"] == 2
    assert record["model"]["class_names"] == MODEL_CLASSES
    assert (record["model"]["min_size"], record["model"]["max_size"]) == (64, 96)
    assert record["data"]["format"] == "yolo" and record["data"]["images"] == 3
    assert (out / "pr_curves.png").read_bytes()[:4] == b"\x89PNG"
    overlays = sorted((out / "overlays").glob("*.jpg"))
    assert len(overlays) == 2 and Image.open(overlays[0]).size == (100, 100)
    assert "AP50" in result.output and "\nall " in result.output and "min_size 64" in result.output


def test_unknown_class_fails_until_mapped_away(tmp_path, checkpoint):
    labels = {**LABELS, "d": [(2, 0.5, 0.5, 0.3, 0.3), (0, 0.2, 0.2, 0.2, 0.2)]}
    data = write_yolo(tmp_path / "photos", ["bolt", "nut", "Bottle"], labels)
    result = invoke("--model", checkpoint, "--data", data, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "'Bottle' not among the model's classes" in result.output
    assert "--class-map Bottle=null" in result.output and "Traceback" not in result.output

    result = invoke("--model", checkpoint, "--data", data, "--out", tmp_path / "out",
                    "--class-map", "Bottle=null")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["data"]["dropped_boxes"] == {"Bottle": 1} and record["data"]["boxes"] == 6
    assert set(record["per_class"]) == set(MODEL_CLASSES)
    assert "dropped by --class-map: Bottle (1 boxes)" in result.output


def test_class_map_renames_to_model_classes(tmp_path, checkpoint):
    data = write_yolo(tmp_path / "photos", ["Bolt", "Nut"])
    result = invoke("--model", checkpoint, "--data", data, "--out", tmp_path / "out",
                    "--class-map", "Bolt=bolt,Nut=nut")
    assert result.exit_code == 0, result.output
    result = invoke("--model", checkpoint, "--data", data, "--out", tmp_path / "out",
                    "--class-map", "Bolt=screw", "--class-map", "Nut=nut")
    assert result.exit_code == 2 and "target(s) ['screw']" in result.output


@pytest.mark.parametrize("layout", ["empty", "no_images", "missing"])
def test_empty_or_missing_folder_fails(tmp_path, checkpoint, layout):
    data = tmp_path / "photos"
    if layout != "missing":
        data.mkdir()
    if layout == "no_images":
        (data / "images").mkdir()
        (data / "classes.txt").write_text("bolt\n")
    result = invoke("--model", checkpoint, "--data", data, "--out", tmp_path / "out")
    assert result.exit_code == 2
    words = {"empty": "empty folder", "no_images": "no images", "missing": "no such folder"}
    assert words[layout] in result.output and not (tmp_path / "out").exists()


def test_image_without_label_file_fails_or_counts_as_background(tmp_path, checkpoint):
    data = write_yolo(tmp_path / "photos", MODEL_CLASSES, unlabelled=("forgotten",))
    (data / "labels" / "b.txt").write_text("")  # an empty label file: a photo without objects
    result = invoke("--model", checkpoint, "--data", data, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "forgotten.png" in result.output and "--unlabelled-as-background" in result.output
    assert "b.png" not in result.output

    result = invoke("--model", checkpoint, "--data", data, "--out", tmp_path / "out",
                    "--unlabelled-as-background")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["data"]["images"] == 4
    assert record["data"]["unlabelled_as_background"] == ["forgotten.png"]


def test_coco_folder_and_checkpoint_errors(tmp_path, checkpoint):
    yolo = load_labelled_folder(write_yolo(tmp_path / "yolo", MODEL_CLASSES)).ds
    coco = tmp_path / "coco"
    (coco / "images").mkdir(parents=True)
    for im in yolo.images:
        (coco / "images" / im.file_name).write_bytes(yolo.image_path(im).read_bytes())
    yolo.with_image_root(coco / "images").save(coco / "annotations.json")
    result = invoke("--model", checkpoint, "--data", coco, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["data"]["format"] == "coco"

    Image.new("RGB", (100, 100)).save(coco / "images" / "stray.png")
    result = invoke("--model", checkpoint, "--data", coco, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "stray.png" in result.output

    result = invoke("--model", tmp_path / "nope.pt", "--data", tmp_path / "yolo")
    assert result.exit_code == 2 and "checkpoint not found" in result.output


class OracleDetector(nn.Module):
    """Returns given boxes for each image, recognised by its flat grey level (see write_yolo)."""

    def __init__(self, answers: dict[int, dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # predict() asks for the device
        self.answers = answers

    def forward(self, images):
        return [self.answers[round(float(im[:, 1::7].median()) * 255 / 40)] for im in images]


def test_perfect_detections_score_one_through_the_class_map(tmp_path):
    """Box format, image order and name matching end to end: ground truth back as detections
    (in the MODEL's label ids, the data listing its classes in another order) gives AP 1."""
    data = load_labelled_folder(write_yolo(tmp_path / "photos", ["nut", "bolt", "Bottle"]))
    to_model = {1: 2, 2: 1}  # data ids (nut, bolt) -> model ids (bolt=1, nut=2)
    answers = {}
    for n, im in enumerate(data.ds.images, 1):
        boxes, labels = data.ds.boxes_xyxy(im.id)
        answers[n] = {"boxes": torch.as_tensor(boxes),
                      "labels": torch.as_tensor([to_model[int(v)] for v in labels]),
                      "scores": torch.full((len(labels),), 0.9)}
    model = ModelUnderTest(OracleDetector(answers), tuple(MODEL_CLASSES), "oracle")
    report = evaluate_folder(model=model, data=data, out=tmp_path / "out",
                             class_map={"Bottle": None}, progress=False)
    assert report.metrics["AP"] == pytest.approx(1.0) and report.metrics["AP_nut"] == pytest.approx(1.0)
    assert report.per_class["bolt"] == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0, "gt_boxes": 2,
                                        "detections": 2}


@pytest.mark.slow
def test_registry_alias_version_and_run_id(tmp_path):
    from mlflow import MlflowClient

    from people_support import register_tiny_models
    from synthloop.config import load_config
    from tests_support import DEMO_CONFIG

    ws = tmp_path / "ws"
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={ws}"])
    versions = register_tiny_models(cfg, tmp_path / "models")
    client = MlflowClient()
    client.set_registered_model_alias(cfg.registered_model_name, "champion", versions[1])
    data = write_yolo(tmp_path / "photos", list(cfg.class_names),
                      {"a": [(0, 0.5, 0.5, 0.4, 0.4)], "b": [(0, 0.3, 0.3, 0.2, 0.2)]})
    registry = ["--config", DEMO_CONFIG, "--workspace", ws, "--data", data]

    result = invoke("--model", "champion", *registry, "--out", tmp_path / "champion")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "champion" / "metrics.json").read_text())
    assert record["model"]["version"] == versions[1] and record["model"]["source"] == "registry"
    assert record["model"]["label"] == f"champion-v{versions[1]}"
    assert set(record["per_class"]) == set(cfg.class_names)

    result = invoke("--model", "v1", *registry, "--out", tmp_path / "v1")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "v1" / "metrics.json").read_text())["model"]["version"] == "1"

    run_id = client.get_model_version(cfg.registered_model_name, "1").run_id
    result = invoke("--model", run_id, *registry, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["model"]["run_id"] == run_id

    import mlflow

    from synthloop import tracking

    with mlflow.start_run() as unregistered:  # a run that logged a model nobody registered
        tracking.log_detector(tmp_path / "models" / "m0" / tracking.CHECKPOINT_NAME)
    result = invoke("--model", unregistered.info.run_id, *registry, "--out", tmp_path / "run2")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run2" / "metrics.json").read_text())["model"]["source"] == "run"

    for spec, words in (("staging", "no alias 'staging'"), ("v9", "no version 9")):
        result = invoke("--model", spec, *registry)
        assert result.exit_code == 2 and words in result.output, result.output
    result = invoke("--model", "champion", "--config", DEMO_CONFIG, "--workspace",
                    tmp_path / "elsewhere", "--data", data)
    assert result.exit_code == 2 and "no MLflow store" in result.output
