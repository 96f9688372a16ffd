"""Certification on a Ray cluster: a pool of Ray actors, each holding the smoother once.

The driver (the process that calls ``evaluate``) reads the data set and sends batches of
images to the actors as they become free (dynamic dispatch: a slow batch does not hold the
others back), at most ``depth`` tasks queued per actor. Results come back to the driver,
which puts them in data order and alone writes the results file.

Fault tolerance is Ray's: the actors are created with ``max_restarts=-1`` and
``max_task_retries=-1``, so an actor whose process dies (``ray.kill``, a crash, a lost node)
is restarted with the same smoother and the tasks it had not finished run again. If an actor
is gone for good (killed with ``no_restart=True``, or its restarts fail), its unfinished
batches are sent to the other actors and a new actor takes its place. Every batch's result is
taken once, so every image appears in the output exactly once.

Ray is an optional dependency (``pip install "fastsmooth[ray]"``); this module imports it
only when a pool starts.
"""
from __future__ import annotations

import collections
import copy
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from fastsmooth.executors.local import Executor
from fastsmooth.executors.work import BatchResult, Evaluable, WorkBatch, certify_work, move_smoother
from fastsmooth.results import smoother_fingerprint

__all__ = ["RayExecutor", "RayNotInstalled", "import_ray"]

INSTALL_HINT = 'pip install "fastsmooth[ray]"  (or: pip install "ray[client]==2.60.0")'
CLIENT_HINT = 'pip install "ray[client]==2.60.0" (grpcio; fastsmooth\'s ray extra includes it)'


class RayNotInstalled(ImportError):
    """Ray was asked for but is not installed."""


def import_ray() -> Any:
    """The ``ray`` module, or an error that says what to install."""
    try:
        import ray
    except ImportError as err:
        raise RayNotInstalled(f"certifying on Ray needs the ray package, which is not installed here: {INSTALL_HINT} "
                              f"({err})") from err
    return ray


def check_client(address: str | None) -> None:
    """A ``ray://`` address needs Ray's client (grpcio), which plain ``ray`` does not install:
    say so in one line instead of Ray's traceback."""
    if address is None or not address.startswith("ray://"):
        return
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise RayNotInstalled(f"connecting to {address} needs Ray's client, which is not installed here: "
                              f"{CLIENT_HINT}") from None


class CertifyWorker:
    """A Ray actor: holds one smoother (and so one copy of the base model) on its device."""

    def __init__(self, smoother: Evaluable, use_gpu: bool, threads: int) -> None:
        if use_gpu:
            self.device = torch.device("cuda")  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
        else:
            self.device = torch.device("cpu")
            torch.set_num_threads(threads)  # the CPUs Ray reserved for this actor
        self.smoother = move_smoother(smoother, self.device)

    def certify(self, batch: WorkBatch, seed: int | None) -> BatchResult:
        return certify_work(self.smoother, batch, self.device, seed)

    def pid(self) -> int:
        """The actor's process id (tests use it to see that a killed actor was replaced)."""
        return os.getpid()


def _portable(smoother: Evaluable) -> Evaluable:
    """The smoother as the workers receive it: a copy with its model on the CPU if it is
    elsewhere (a CUDA tensor cannot be unpickled on a CPU-only worker); each worker moves it
    to its own device."""
    device = getattr(smoother, "device", torch.device("cpu"))
    if isinstance(device, torch.device) and device.type != "cpu":
        smoother = copy.deepcopy(smoother)
        move_smoother(smoother, torch.device("cpu"))
    return smoother


class RayExecutor(Executor):
    """Certify on a pool of Ray actors.

    Args:
        address: the Ray cluster to join (``"auto"``: the one ``ray start`` runs on this node;
            ``"ray://host:10001"``: a remote cluster); ``None`` starts a local Ray instance
            with this machine's CPUs and GPUs. Ignored when Ray is already initialized.
        workers: number of actors; default: one per GPU of the cluster when it has GPUs,
            else one per ``cpus_per_worker`` CPUs.
        gpus_per_worker: GPUs per actor; default 1 when the cluster has GPUs, else 0 (CPU
            workers). Give 0 for CPU workers on a cluster with GPUs.
        cpus_per_worker: CPUs per actor (a CPU worker runs that many torch threads).
        depth: batches queued per actor (2: the next batch is already there when one ends).
        init_options: extra keyword arguments of ``ray.init`` (e.g. ``num_cpus``), used only
            when this executor starts Ray.
        keep_alive: keep the actors after a run, for the next run of the same smoother (the
            same class, hyperparameters and model weights, compared by their fingerprint;
            any change starts new actors). Starting an actor means a new process that imports
            torch and receives the model: seconds. :meth:`close` ends them. By default each
            run starts and ends its own.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, gpus_per_worker: float | None = None,
                 cpus_per_worker: float = 1, depth: int = 2, init_options: dict[str, Any] | None = None,
                 keep_alive: bool = False) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive integer or None (one per GPU, else per CPU), got {workers!r}")
        if gpus_per_worker is not None and not gpus_per_worker >= 0:
            raise ValueError(f"gpus_per_worker must be >= 0 (0: CPU workers), got {gpus_per_worker!r}")
        if not cpus_per_worker > 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        self.address = address
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.cpus_per_worker = cpus_per_worker
        self.depth = depth
        self.init_options = dict(init_options or {})
        self.keep_alive = bool(keep_alive)
        self._pool_of: Any = None  # the fingerprint of the smoother the live actors hold (keep_alive)
        self._spawn: Any = None
        self.actors: list[Any] = []  # the live actors of the current run (tests kill one of them)
        self.completed = 0  # batches whose result came back in the current run
        self.replaced = 0  # actors replaced after they were gone for good

    # -- the pool ---------------------------------------------------------------------------
    def _connect(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            check_client(self.address)
            options = {"include_dashboard": False, "log_to_driver": True, **self.init_options}
            ray.init(address=self.address or "local", **options)  # "local": a new instance, never a stray cluster
            if self.address is None:  # our own instance: its processes end with this process, however it ends
                from fastsmooth.executors.ray_reaper import reap_on_exit

                reap_on_exit(ray)
        return ray

    def _shape(self, ray: Any) -> tuple[int, float, float]:
        """(workers, GPUs per worker, CPUs per worker), checked against the cluster's resources."""
        resources = ray.cluster_resources()
        gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
        per_gpu = self.gpus_per_worker if self.gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
        if self.workers is not None:
            workers = self.workers
        elif per_gpu > 0:
            workers = int(gpus // per_gpu)
        else:
            workers = int(cpus // self.cpus_per_worker)
        if workers < 1 or workers * per_gpu > gpus or workers * self.cpus_per_worker > cpus:
            raise ValueError(f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs, not enough for {workers} worker(s) "
                             f"of {self.cpus_per_worker:g} CPU(s) and {per_gpu:g} GPU(s) each; ask for fewer workers "
                             "(--workers), or fewer CPUs / GPUs per worker")
        return workers, per_gpu, self.cpus_per_worker

    def device(self, default: torch.device | str | None) -> torch.device:
        """The workers' kind of device: CUDA for GPU workers, else the CPU (joins Ray to find out)."""
        _, per_gpu, _ = self._shape(self._connect())
        return torch.device("cuda" if per_gpu > 0 else "cpu")

    def describe(self) -> str:
        if self.actors or self.workers:
            return f"{len(self.actors) or self.workers} Ray worker(s)"
        return "Ray workers (one per GPU of the cluster, else one per CPU)"

    def run(self, smoother: Evaluable, batches: Iterable[WorkBatch], device: torch.device | str | None,
            seed: int | None = None) -> Iterator[tuple[WorkBatch, BatchResult]]:
        """Certify ``batches`` on the pool, yielding results in batch order. ``device`` is not
        used: each actor certifies on its own device (its GPU, or the CPU)."""
        ray = self._connect()
        key = smoother_fingerprint(smoother) if self.keep_alive else None
        if not (self.keep_alive and self.actors and self._pool_of == key):
            self._start(ray, smoother)
            self._pool_of = key
        self.completed = self.replaced = 0
        try:
            yield from self._dispatch(ray, batches, seed)
        finally:
            if not self.keep_alive:
                self.close()

    def _start(self, ray: Any, smoother: Evaluable) -> None:
        """Start the actors, each receiving ``smoother`` (put in Ray's object store once)."""
        self.close()
        workers, per_gpu, per_cpu = self._shape(ray)
        actor_class = ray.remote(CertifyWorker).options(
            num_cpus=per_cpu, num_gpus=per_gpu, max_restarts=-1, max_task_retries=-1
        )
        shared = ray.put(_portable(smoother))
        self._spawn = lambda: actor_class.remote(shared, per_gpu > 0, max(1, int(per_cpu)))
        self.actors = [self._spawn() for _ in range(workers)]

    def close(self) -> None:
        """End the actors (a run without ``keep_alive`` does this itself)."""
        if self.actors:
            ray = import_ray()
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
        self.actors, self._pool_of = [], None

    def _dispatch(self, ray: Any, batches: Iterable[WorkBatch], seed: int | None
                  ) -> Iterator[tuple[WorkBatch, BatchResult]]:
        from ray.exceptions import RayActorError, RayTaskError

        source = iter(batches)
        slots = collections.deque(actor for actor in self.actors for _ in range(self.depth))
        retry: collections.deque[WorkBatch] = collections.deque()  # batches of actors gone for good
        in_flight: dict[Any, tuple[Any, WorkBatch]] = {}
        finished: dict[int, tuple[WorkBatch, BatchResult]] = {}
        window = 2 * self.depth * len(self.actors)  # batches read but not yet yielded, at most
        pulled, next_out, exhausted = 0, 0, False  # sequence numbers run from 0 (WorkBatch)
        while True:
            while slots and (retry or (not exhausted and pulled - next_out < window)):
                if retry:
                    batch = retry.popleft()
                else:
                    batch = next(source, None)
                    if batch is None:
                        exhausted = True
                        break
                    pulled += 1
                actor = slots.popleft()
                in_flight[actor.certify.remote(batch, seed)] = (actor, batch)
            if not in_flight:
                return
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            actor, batch = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except RayTaskError as err:  # the smoother raised: report its error, not Ray's wrapper
                raise err.as_instanceof_cause() from None
            except RayActorError:
                retry.append(batch)
                if actor in self.actors:  # first sign of this actor's end: a new one takes its slots
                    self.actors.remove(actor)
                    slots = collections.deque(a for a in slots if a is not actor)
                    replacement = self._spawn()
                    self.actors.append(replacement)
                    self.replaced += 1
                    slots.extend([replacement] * self.depth)
                continue
            slots.append(actor)
            self.completed += 1
            finished[batch.sequence] = (batch, result)
            while next_out in finished:
                yield finished.pop(next_out)
                next_out += 1
