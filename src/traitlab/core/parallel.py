"""Running seeds (and base pretraining) in worker processes, with progress in the parent.

On a small CPU model one torch thread per process beats several threads per process: the
matrices are too small to split, so two seeds on two cores run nearly twice as fast as one
seed on two threads. Workers send progress events through a queue; the parent draws them.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from traitlab.core.progress import Fraction, Reporter


class QueueReporter:
    """The `Reporter` interface, forwarding events to the parent process through a queue."""

    def __init__(self, queue: Any, hide_cached: bool = False) -> None:
        self.queue = queue
        self.hide_cached = hide_cached

    def log(self, message: str) -> None:
        self.queue.put(("log", message))

    def _updater(self, key: str) -> Callable[[float], None]:
        last = [-1.0]

        def update(frac: float) -> None:
            if frac - last[0] >= 0.02 or frac >= 1.0:  # throttle: the queue is not free
                last[0] = frac
                self.queue.put(("update", key, frac, None))

        return update

    @contextmanager
    def stage(self, description: str, cached: bool = False) -> Iterator[Fraction]:
        if cached and self.hide_cached:
            yield lambda frac: None
            return
        self.queue.put(("add", description, description + (" (cached)" if cached else "")))
        up = self._updater(description)
        try:
            yield up
        finally:
            self.queue.put(("update", description, 1.0, None))

    def named(self, description: str) -> Callable[[str, float], None]:
        self.queue.put(("add", description, description))
        up = self._updater(description)
        return lambda _sub, frac: up(frac)


def listen(queue: Any, reporter: Reporter) -> threading.Thread:
    """Draw the workers' events on `reporter` until a None arrives on the queue."""

    def loop() -> None:
        # Python runs signal handlers in the main thread only; blocked here, a Ctrl-C cannot
        # land in this thread while the main thread has it ignored (see sigint_ignored).
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        updates: dict[str, Callable[[float], None]] = {}
        contexts: dict[str, Any] = {}
        while True:
            msg = queue.get()
            if msg is None:
                break
            kind = msg[0]
            if kind == "log":
                reporter.log(msg[1])
            elif kind == "add":
                ctx = reporter.stage(msg[2])
                contexts[msg[1]] = ctx
                updates[msg[1]] = ctx.__enter__()
            elif kind == "update" and msg[1] in updates:
                updates[msg[1]](msg[2])
        for ctx in contexts.values():
            ctx.__exit__(None, None, None)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def ignore_sigint() -> None:
    """Initializer of worker and manager processes: Ctrl-C goes to the parent alone, which
    stops the pool and prints one line, instead of every process printing a traceback.
    A worker also dies with its parent (Linux): a killed run leaves no worker finishing its
    task behind, holding a run directory's lock the resumed run needs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


def die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent exits (prctl PR_SET_PDEATHSIG;
    a no-op where that does not exist)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        import multiprocessing

        parent = multiprocessing.parent_process()
        if parent is not None and parent.pid != os.getppid():
            os._exit(1)  # the parent died before the request took effect: go now
    except (OSError, AttributeError):
        pass


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore Ctrl-C while child processes are spawned: an ignored signal stays ignored
    across exec, and Python then leaves it so, so a child never sees Ctrl-C, not even while
    it is still importing (before any initializer could run).

    The parent must not lose a Ctrl-C that lands in this window (starting the manager takes
    0.1-0.2 s, more on a loaded machine): SIGINT is also blocked in this thread, and a blocked signal is kept
    pending rather than ignored, so it arrives once the handler is back and the mask lifted.
    """
    blocked = hasattr(signal, "pthread_sigmask")
    if blocked:
        # Started inside the window, multiprocessing's resource tracker would unblock SIGINT
        # on its way out (it blocks and unblocks it around its own spawn): start it first.
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)  # the handler first, then the pending signal
        if blocked:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def submit(pool: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """`pool.submit` with Ctrl-C ignored while it may spawn a worker (see sigint_ignored)."""
    with sigint_ignored():
        return pool.submit(fn, *args)


def start_manager(ctx: Any) -> Any:
    """A started `SyncManager` (for the progress queue) that ignores Ctrl-C."""
    from multiprocessing.managers import SyncManager

    manager = SyncManager(ctx=ctx)
    with sigint_ignored():
        manager.start(ignore_sigint)
    return manager
