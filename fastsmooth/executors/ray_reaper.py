"""End the processes of the local Ray instance fastsmooth started, when the driver ends in any way.

``ray.shutdown`` (registered by Ray at exit) stops them on a normal exit; a driver killed by a
signal runs no exit handler, and Ray's own reaper does not reach every process (the agents
the raylet starts outlive it). So a small watcher process, in its own session (a signal to
the driver's process group does not reach it), holds the read end of a pipe whose write end
only the driver holds: when the driver ends, however, the pipe closes, and the watcher ends
every process whose command line names this Ray session's directory (unique per instance:
GCS, raylet, agents, workers), with SIGTERM, then SIGKILL after a grace period. Linux only
(it reads /proc); elsewhere nothing is started.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

__all__ = ["reap_on_exit", "session_processes"]

_watchers: list[subprocess.Popen] = []  # kept referenced: the pipe's write end lives as long as the driver

_WATCHER = r"""
import os, signal, sys, time
session = {session!r}.encode()

def session_processes():
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open("/proc/" + entry + "/cmdline", "rb") as f:
                    if session in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found

sys.stdin.buffer.read()  # returns at EOF: the driver has ended
for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
    for pid in session_processes():
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while session_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
"""  # self-contained (the same scan as session_processes): it starts in milliseconds, imports nothing


def session_processes(session_dir: str) -> list[int]:
    """PIDs of the processes (other than this one) whose command line names ``session_dir``."""
    found = []
    marker = session_dir.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry))
    return found


def reap_on_exit(ray: Any) -> None:
    """Start the watcher of the local Ray instance ``ray.init`` just started (once per instance)."""
    if not sys.platform.startswith("linux"):
        return
    node = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(node, "_global_node", None)
    session = node.get_session_dir_path() if node is not None else None
    if not session:
        return
    _watchers.append(subprocess.Popen(
        [sys.executable, "-c", _WATCHER.format(session=session)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    ))
