"""Lockstep timing: the roles of one benchmark row take turns at every forward pass of the
base network, and each role's time is the sum of its own turns.

Why: the speed of a small shared VM switches between states that last from a second to a
minute (the same ResNet-18 forward at batch 1 takes 14 ms or 22 ms). A row whose roles run
for 15 s each cannot be resolved to 5% by interleaving whole calls: a role that happens to
run in a slow minute is 30% slower. Taking turns forward by forward puts every state on
every role alike.

How: each role runs in a thread of its own, but only one runs at a time. A turn starts when
the scheduler resumes the role and ends when the role's next forward pass has run: the
forward pass itself runs on the scheduler's (main) thread, so that one OpenMP team does all
the network's work, as without lockstep. Turns go round in a palindrome (A B C, C B A, ...).
The hand-over between threads (about 0.1 ms per turn on the project's VM) counts to every
role alike.

A role's own work between forward passes runs on one thread: each role thread sets its own
OpenMP thread count to 1 (a per-thread setting: the network's team keeps every thread), so
that no role starts a team of its own whose threads would contend with the network's. That
can only slow fastsmooth down (its kernels and vote counting use every thread outside
lockstep), and little: the rows timed this way do little work between forwards. ``run``
checks after every turn that no thread was started and raises otherwise.
"""
from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
from collections.abc import Callable

import torch
from torch import nn


class LockstepModel(nn.Module):
    """Stands in for the base network in every role: its forward pass waits for the role's turn."""

    def __init__(self, model: nn.Module, lockstep: Lockstep) -> None:
        super().__init__()
        self.model = model
        self._lockstep = lockstep

    def forward(self, *args, **kwargs):
        return self._lockstep.forward(self.model, args, kwargs)


class _Role:
    def __init__(self, name: str, fn: Callable[[], object]) -> None:
        self.name, self.fn = name, fn
        self.go = threading.Semaphore(0)  # scheduler -> role: your turn
        self.request: tuple | None = None  # the forward pass the role waits for
        self.result: object = None
        self.failure: BaseException | None = None  # raised by that forward pass
        self.error: BaseException | None = None  # raised by the role itself
        self.done = False
        self.thread: threading.Thread | None = None


@functools.cache
def _openmp_runtimes() -> tuple[ctypes.CDLL, ...]:
    """The GNU / LLVM OpenMP runtimes loaded in this process (Linux)."""
    if not os.path.isfile("/proc/self/maps"):
        return ()
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "libgomp" in line or "libomp" in line or "libiomp" in line}
    return tuple(ctypes.CDLL(path) for path in sorted(paths) if os.path.isfile(path))


def _serial_thread() -> None:
    """This thread's own ATen work runs single-threaded (OpenMP's per-thread thread count)."""
    torch.get_num_threads()  # ATen's per-thread lazy initialization first: it sets the count
    for runtime in _openmp_runtimes():
        runtime.omp_set_num_threads(1)


def _threads() -> set[str]:
    """The ids of the process's threads (Linux; elsewhere the check is off)."""
    return set(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else set()


class Lockstep:
    """Runs several roles in one round, alternating at every forward pass of ``model``.

    ``model`` (a :class:`LockstepModel`) is what the roles must call; ``sync`` is called after
    each forward pass (wait for a GPU) so that a turn ends when its work does.
    """

    def __init__(self, model: nn.Module, sync: Callable[[], None] = lambda: None) -> None:
        self.model = LockstepModel(model, self).train(model.training)
        self.sync = sync
        self._local = threading.local()
        self._back = threading.Semaphore(0)  # role -> scheduler: a forward pass to run, or done
        self._aborted = False

    def forward(self, model: nn.Module, args: tuple, kwargs: dict):
        role: _Role | None = getattr(self._local, "role", None)
        if role is None:  # outside a round (e.g. on the main thread): no turns
            return model(*args, **kwargs)
        # Inference / grad mode are thread-local: the pass runs in the role's.
        role.request = (model, args, kwargs, torch.is_inference_mode_enabled(), torch.is_grad_enabled())
        self._back.release()
        role.go.acquire()
        if self._aborted:
            raise RuntimeError("lockstep round aborted")
        if role.failure is not None:
            raise role.failure
        result, role.result = role.result, None
        return result

    def _body(self, role: _Role) -> None:
        self._local.role = role
        _serial_thread()
        role.go.acquire()
        try:
            if not self._aborted:
                role.fn()
        except BaseException as error:  # handed to the scheduler, re-raised there
            role.error = error
        finally:
            role.done = True
            self._back.release()

    def _serve(self, role: _Role) -> None:
        model, args, kwargs, inference, grad = role.request
        role.request = None
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                role.result = model(*args, **kwargs)
            self.sync()
            role.failure = None
        except Exception as error:
            role.result, role.failure = None, error

    def run(self, roles: dict[str, Callable[[], object]]) -> dict[str, float]:
        """Runs every role once, in turns; returns each role's time (the sum of its turns) in seconds."""
        # The main thread's OpenMP team exists before the thread count is taken.
        torch.ones(1 << 20).add_(1)
        self._back, self._aborted = threading.Semaphore(0), False
        members = [_Role(name, fn) for name, fn in roles.items()]
        for role in members:
            role.thread = threading.Thread(target=self._body, args=(role,), name=f"lockstep {role.name}", daemon=True)
            role.thread.start()
        expected = _threads()
        seconds = {role.name: 0.0 for role in members}
        alive, forward = list(members), True
        try:
            while alive:
                for role in alive if forward else reversed(alive):
                    start = time.perf_counter()
                    role.go.release()
                    self._back.acquire()
                    if not role.done:
                        self._serve(role)
                    seconds[role.name] += time.perf_counter() - start
                    if _threads() - expected:
                        raise RuntimeError(
                            f"lockstep role {role.name!r} started threads of its own ({len(_threads() - expected)} "
                            "new): its work contends with the network's; time it in whole calls"
                        )
                alive = [role for role in alive if not role.done]
                forward = not forward
        finally:
            # After an error, the roles still waiting end without running further.
            self._aborted = any(not role.done for role in members)
            for role in members:
                if not role.done:
                    role.go.release()
            for role in members:
                role.thread.join()
        for role in members:
            if role.error is not None:
                raise role.error
        return seconds
