"""Where every artifact of an experiment's run directory lives: one object owns the layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory (see the README's tree)."""

    root: Path

    def seed(self, seed: int) -> Path:
        return self.root / f"seed-{seed}"

    def teacher(self, seed: int) -> Path:
        return self.seed(seed) / "teacher"

    def control_teacher(self, seed: int) -> Path:
        """The neutral control teacher (control.teacher: neutral)."""
        return self.seed(seed) / "control-teacher"

    def gen(self, seed: int, which: str) -> Path:
        return self.seed(seed) / f"gen-{which}"

    def data(self, seed: int, which: str) -> Path:
        return self.seed(seed) / f"data-{which}"

    def student(self, seed: int, arm: str) -> Path:
        return self.seed(seed) / f"student-{arm}"

    def eval(self, seed: int, arm: str) -> Path:
        return self.seed(seed) / f"eval-{arm}"

    def base_eval(self, which: str) -> Path:
        return self.root / ("eval-base" if which == "base" else "eval-xinit-base")

    @property
    def utility(self) -> Path:
        """The utility check's held-out data (the base's completions of held-out prompts)."""
        return self.root / "utility-data"

    @property
    def requests(self) -> Path:
        """API backends' request cache (answers, file and job ids): a resumed run reuses it."""
        return self.root / "requests.sqlite"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"
