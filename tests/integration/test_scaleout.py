"""Scale-out: pool scoring and rendering give the same results locally and on a Dask cluster
(two worker processes on loopback); the torchrun helpers' single-process path and a real
two-process Gloo group on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from synthloop.config import DetectorConfig, load_config
from synthloop.scaleout import dask_map, local_map, render_domain_mapped, score_jobs, score_pool
from synthloop.scaleout.ddp import env_from_torchrun, process_group, shard_indices, unwrap, wrap_model
from people_support import make_pool
from tests_support import DEMO_CONFIG, ROOT, free_port


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from synthloop.detection import build_detector, save_checkpoint

    import torch

    tmp = tmp_path_factory.mktemp("scaleout")
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp / 'ws'}"])
    folder = make_pool(cfg, 6, 64, 48)
    torch.manual_seed(0)
    det = DetectorConfig(min_size=48, max_size=64, box_score_thresh=0.0)
    ckpt = save_checkpoint(build_detector(cfg=det, num_classes=1), tmp / "m.pt", cfg=det, num_classes=1)
    return ckpt, folder


def same_scores(a, b) -> None:
    assert [s.image_id for s in a] == [s.image_id for s in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.boxes, y.boxes, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(x.probs, y.probs, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(x.feature, y.feature, rtol=1e-4, atol=1e-5)


def test_chunks_keep_the_pool_order(pool):
    ckpt, folder = pool
    jobs = score_jobs(ckpt, folder / "annotations.json", folder / "images", [6, 2, 3, 1, 5],
                      chunk_size=2, batch_size=2)
    assert [j.image_ids for j in jobs] == [(6, 2), (3, 1), (5,)]
    with pytest.raises(ValueError):
        score_jobs(ckpt, "a", "b", [1], chunk_size=0)


@pytest.mark.slow
def test_scoring_on_dask_equals_local(pool):
    ckpt, folder = pool
    jobs = score_jobs(ckpt, folder / "annotations.json", folder / "images", range(1, 7),
                      chunk_size=2, batch_size=2)
    local = score_pool(jobs, map_fn=local_map)
    with dask_map(n_workers=2) as mapper:
        remote = score_pool(jobs, map_fn=mapper)
    assert len(local) == 6
    same_scores(local, remote)


@pytest.mark.slow
@pytest.mark.render
def test_rendering_on_dask_equals_local(render_python, tmp_path):
    cfg = load_config(DEMO_CONFIG, overrides=[
        f"workspace={tmp_path}", "synthetic.num_images=4", "synthetic.width=64",
        "synthetic.height=48", "synthetic.samples=1", "render.workers=2",
        f"render.blender_python={render_python}"])
    with dask_map(n_workers=2) as mapper:
        remote = render_domain_mapped(cfg.synthetic, cfg.parts, cfg.class_names, tmp_path / "dask",
                                      render_cfg=cfg.render, map_fn=mapper)
    local = render_domain_mapped(cfg.synthetic, cfg.parts, cfg.class_names, tmp_path / "local",
                                 render_cfg=cfg.render)
    assert [im.id for im in remote.images] == [im.id for im in local.images] == [1, 2, 3, 4]
    assert [a.bbox for a in remote.annotations] == [a.bbox for a in local.annotations]


def test_single_process_path_of_the_torchrun_helpers():
    import torch

    env = env_from_torchrun({})
    assert (env.rank, env.world_size, env.distributed, env.is_main) == (0, 1, False, True)
    model = torch.nn.Linear(2, 1)
    with process_group(environ={}) as env:
        assert wrap_model(model, env) is model and unwrap(model) is model
        assert sorted(shard_indices(5, env)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        env_from_torchrun({"RANK": "3", "WORLD_SIZE": "2"})


def test_shards_cover_every_index_with_equal_counts():
    from synthloop.scaleout.ddp import DistEnv

    parts = [shard_indices(10, DistEnv(rank=r, world_size=3), seed=1) for r in range(3)]
    assert all(len(p) == 4 for p in parts) and set(sum(parts, [])) == set(range(10))


@pytest.mark.slow
def test_two_gloo_processes_average_gradients(tmp_path):
    """What torchrun does, by hand: two processes, RANK/WORLD_SIZE/MASTER_* set, Gloo on CPU."""
    port = free_port()
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import sys, torch
        from synthloop.scaleout.ddp import process_group, wrap_model, unwrap
        with process_group() as env:
            torch.manual_seed(0)
            model = wrap_model(torch.nn.Linear(1, 1, bias=False), env)
            x = torch.tensor([[float(env.rank + 1)]])
            model(x).sum().backward()   # d/dw = x: 1 on rank 0, 2 on rank 1
            grad = unwrap(model).weight.grad.item()
            print(f"rank {env.rank} grad {grad}")
            assert abs(grad - 1.5) < 1e-6, grad   # averaged over the two ranks
    """))
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "CUDA_VISIBLE_DEVICES": "",
               "PYTHONPATH": str(ROOT / "src")}
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert "rank 1 grad 1.5" in outs[1]


def labeled_set(folder, count: int = 4):
    """``count`` 64x48 images with one box each (COCO [x, y, w, h])."""
    from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for
    from people_support import image_bytes

    (folder / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(1, count + 1):
        (folder / "images" / f"{i}.jpg").write_bytes(image_bytes(64, 48, seed=i))
        images.append(CocoImage(i, f"{i}.jpg", 64, 48))
        anns.append(CocoAnnotation(i, i, 1, (8.0, 8.0, 20.0, 16.0), 320.0))
    return CocoDataset(images, anns, categories_for(["blade"]), folder / "images").save(
        folder / "annotations.json")


DDP_SETTINGS = ["detector.min_size=48", "detector.max_size=64", "finetune.batch_size=2",
                "finetune.warmup_steps=0", "finetune.augment=none"]


@pytest.mark.slow
def test_train_ddp_single_process(tmp_path):
    from synthloop.detection import load_checkpoint
    from synthloop.scaleout.train_ddp import train_ddp

    train = labeled_set(tmp_path / "labeled")
    metrics = train_ddp(config=DEMO_CONFIG, train=train, out=tmp_path / "out.pt", epochs=1,
                        overrides=DDP_SETTINGS)
    assert np.isfinite(metrics["loss"])
    assert load_checkpoint(tmp_path / "out.pt").checkpoint_extra["world_size"] == 1


@pytest.mark.slow
def test_train_ddp_under_torchrun_with_two_cpu_processes(tmp_path):
    train = labeled_set(tmp_path / "labeled")
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc-per-node=2", "-m", "synthloop.scaleout.train_ddp",
           "--config", str(DEMO_CONFIG), "--train", str(train), "--out", str(tmp_path / "out.pt"),
           "--epochs", "1", *sum((["--set", s] for s in DDP_SETTINGS), [])]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    from synthloop.detection import load_checkpoint

    assert load_checkpoint(tmp_path / "out.pt").checkpoint_extra["world_size"] == 2


@pytest.mark.slow
def test_score_flow_on_a_dask_task_runner(pool, tmp_path):
    """flows/scaleout.py: Prefect tasks on a local Dask cluster give the local scores."""
    from prefect.testing.utilities import prefect_test_harness

    from synthloop.stages.score import load_scores

    sys.path.insert(0, str(ROOT / "flows"))
    import scaleout as scaleout_flows

    ckpt, folder = pool
    ws = folder.parent.parent
    overrides = [f"workspace={ws}", "dask.n_workers=2", "dask.score_chunk_size=2",
                 "active.batch_size=2"]
    cfg = load_config(DEMO_CONFIG, overrides=overrides)
    runner = scaleout_flows.dask_task_runner(cfg)
    assert runner.cluster_kwargs["n_workers"] == 2
    with prefect_test_harness(server_startup_timeout=120):
        out = scaleout_flows.score_scaleout.with_options(task_runner=runner)(
            str(DEMO_CONFIG), str(ckpt), str(tmp_path / "scores.npz"), overrides)
    assert out == {"images": 6, "chunks": 3, "scores": str(tmp_path / "scores.npz")}
    ids, probs, features = load_scores(tmp_path / "scores.npz")
    local = score_pool(score_jobs(ckpt, folder / "annotations.json", folder / "images", range(1, 7),
                                  chunk_size=6, batch_size=2))
    assert ids == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(features, np.stack([s.feature for s in local]), rtol=1e-4, atol=1e-5)
