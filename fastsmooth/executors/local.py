"""The in-process executor: batches are certified one after another in the calling process."""
from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator

import torch

from fastsmooth.executors.work import BatchResult, Evaluable, WorkBatch, certify_work

__all__ = ["Executor", "LocalExecutor"]


class Executor(abc.ABC):
    """Runs the certification of a stream of batches.

    ``run`` consumes ``batches`` lazily (the driver reads the data set as work is needed) and
    yields one :class:`BatchResult` per batch, **in the order of the batches**, so that the
    results file of a run is the same whatever executes it. Executors hold no results: the
    caller writes them.
    """

    @abc.abstractmethod
    def run(self, smoother: Evaluable, batches: Iterable[WorkBatch], device: torch.device | str | None,
            seed: int | None = None) -> Iterator[tuple[WorkBatch, BatchResult]]:
        """Certify every batch of ``batches`` with ``smoother`` (``seed``: see :func:`certify_work`)."""

    def describe(self) -> str:
        """A short description for messages (e.g. ``in process``, ``4 Ray workers``)."""
        return type(self).__name__

    def device(self, default: torch.device | str | None) -> torch.device | str | None:
        """The device the batches are certified on (recorded in the run's fingerprint), given
        the caller's ``default``."""
        return default


class LocalExecutor(Executor):
    """Certifies every batch in this process, on ``device`` (the default of ``evaluate``)."""

    def run(self, smoother: Evaluable, batches: Iterable[WorkBatch], device: torch.device | str | None,
            seed: int | None = None) -> Iterator[tuple[WorkBatch, BatchResult]]:
        for batch in batches:
            yield batch, certify_work(smoother, batch, device, seed)

    def describe(self) -> str:
        return "in process"
