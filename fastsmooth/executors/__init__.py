"""Executors: where the batches of a certification run are certified.

``evaluate`` (the driver) reads the data set, cuts it into :class:`WorkBatch` es and writes
the results file; an executor only certifies batches and hands the results back in batch
order:

- :class:`LocalExecutor`: in the calling process (the default);
- :class:`RayExecutor`: on a pool of Ray actors, one per GPU or a chosen number of CPU
  workers, on this machine or a Ray cluster (needs the optional ``ray`` extra).

Seeded runs of randomized smoothers draw every image's randomness from (seed, image index)
(:mod:`fastsmooth.executors.seeding`), so the answers do not depend on the executor.
"""
from fastsmooth.executors.local import Executor, LocalExecutor
from fastsmooth.executors.ray_pool import RayExecutor, RayNotInstalled
from fastsmooth.executors.seeding import image_generator, is_randomized
from fastsmooth.executors.work import BatchResult, Evaluable, WorkBatch, certify_work

__all__ = [
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "RayNotInstalled",
    "WorkBatch",
    "BatchResult",
    "Evaluable",
    "certify_work",
    "image_generator",
    "is_randomized",
]
