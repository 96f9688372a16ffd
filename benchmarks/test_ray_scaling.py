"""Scaling out on Ray: 2 Ray CPU workers against one process, on the same data in the same run.

Roles, rounds interleaved: ``one process`` (``evaluate`` in this process, torch using every
core); ``2 Ray CPU workers`` (``RayExecutor(workers=2)``: two actors of one CPU and one torch
thread each, started and ended by each run, as ``fastsmooth certify --ray`` does); and
``2 Ray CPU workers, started`` (the same with ``keep_alive=True``: the actors were started by
the untimed warm-up call, so a round times the dispatch alone). Groups:

- column smoothing (s = 2, theta = 0.3) of the demo digits with the papers' MNIST CNN: the
  throughput of each (images / s);
- the same digits (all, and a quarter of them) through a smoother that does no work (every
  answer 0): what Ray adds per image (shipping batches of images to the actors and the
  answers back: the started pool's time, or its difference between the two sizes) and per
  run (starting the actors and shipping the smoother: cold minus started).

The local Ray instance itself is started once, untimed.
"""
from __future__ import annotations

import sys

import pytest
import torch
from torch.utils.data import Subset

import fastsmooth
from fastsmooth.executors import LocalExecutor, RayExecutor
from fastsmooth.smoothing.base import Certified

from conftest import quick, run

ray = pytest.importorskip("ray")
pytest.importorskip("mlxtend")

IMAGES = 200 if quick() else 1000
BATCH_IMAGES = 16


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # NoWork travels by value
    # 4 logical CPUs on the 2 cores: the kept pool's two idle actors must not keep the per-run
    # pool's two from starting (Ray would make them wait for free CPUs forever)
    ray.init(address="local", num_cpus=4, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def digits():
    from fastsmooth.data import demo_mnist

    return Subset(demo_mnist()[1], range(IMAGES))


class NoWork:
    """A smoother that answers 0 at once: what remains of a run is the executor's own cost."""

    certificate_name = "patch_size"

    def evaluate_batch(self, x: torch.Tensor) -> Certified:
        zeros = torch.zeros(x.shape[0], dtype=torch.int64)
        return Certified(zeros, zeros.double())


def _roles(smoother, data):
    """(one process, 2 Ray CPU workers started per run, 2 kept Ray CPU workers, the kept pool)."""
    kept = RayExecutor(workers=2, keep_alive=True)

    def certify(executor):
        return lambda: fastsmooth.evaluate(smoother, data, progress=False, batch_images=BATCH_IMAGES, executor=executor)

    return certify(LocalExecutor()), certify(RayExecutor(workers=2)), certify(kept), kept


def _compare(benchmark, smoother, data, group: str, images: int) -> None:
    local, cold, started, kept = _roles(smoother, data)
    try:
        run(benchmark, cold, group=group, role="2 Ray CPU workers", rounds=3, primary=True,
            interleaved={"one process": local, "2 Ray CPU workers, started": started}, ray_images=images)
    finally:
        kept.close()


def test_column_mnist_two_ray_workers(benchmark, digits):
    model = fastsmooth.models.build("mnist_cnn", in_channels=2, num_classes=10)
    smoother = fastsmooth.ColumnSmoothing(model, 10, size=2, threshold=0.3, batch_size=1000)
    _compare(benchmark, smoother, digits, f"Ray: column s=2, MNIST CNN, {IMAGES} digits", IMAGES)


@pytest.mark.parametrize("images", [IMAGES // 4, IMAGES])
def test_ray_overhead(benchmark, digits, images):
    """At two sizes: the difference gives Ray's cost per image, the rest its cost per run."""
    _compare(benchmark, NoWork(), Subset(digits, range(images)),
             f"Ray: overhead (a smoother doing no work), {images} digits", images)
