"""Progress display: a rich progress bar per stage, or silence (tests, `--quiet`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Fraction = Callable[[float], None]


def batch_progress(total: int, progress: Fraction | None) -> Callable[[int], None]:
    """An `on_batch(n)` callback for the sampler that reports the finished fraction of `total`."""
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done / max(1, total))

    return on_batch


class Reporter:
    """Hands out per-stage progress callbacks taking the finished fraction in [0, 1]."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None

    def __enter__(self) -> Reporter:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description:<34}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message)

    @contextmanager
    def stage(self, description: str, cached: bool = False) -> Iterator[Fraction]:
        """A bar for one stage; yields `update(fraction)`. Cached stages show as done at once."""
        if self._progress is None:
            yield lambda _f: None
            return
        label = description + (" (cached)" if cached else "")
        task = self._progress.add_task(label, total=100)

        def update(frac: float) -> None:
            assert self._progress is not None
            self._progress.update(task, completed=round(100 * max(0.0, min(1.0, frac))))

        try:
            yield update
        finally:
            update(1.0)

    def named(self, description: str) -> Callable[[str, float], None]:
        """A callback of (sub-description, fraction) for long library calls (pretraining)."""
        if self._progress is None:
            return lambda _d, _f: None
        task = self._progress.add_task(description, total=100)

        def update(sub: str, frac: float) -> None:
            assert self._progress is not None
            self._progress.update(
                task, completed=round(100 * frac), description=f"{description} {sub}"[:34]
            )

        return update


class NullProgress:
    """A progress callback that shows nothing."""

    def __call__(self, frac: float) -> None:  # pragma: no cover - trivial
        pass


class stage_bar:
    """A Reporter stage bar, or nothing without a reporter."""

    def __init__(self, reporter: Any, label: str, cached: bool) -> None:
        self.reporter, self.label, self.cached = reporter, label, cached
        self._cm: Any = None

    def __enter__(self) -> Any:
        if self.reporter is None:
            return NullProgress()
        self._cm = self.reporter.stage(self.label, cached=self.cached)
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)
