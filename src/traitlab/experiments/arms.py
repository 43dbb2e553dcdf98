"""The arms of the experiment: every model that is evaluated, in one table.

An arm names the base it starts from, the data it is trained on (students) and its role in
the comparisons; the pipeline, the summary and the report all read this table, so adding an
arm (a defended student, a later generation) is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    name: str
    label: str
    base: str  # "base" (the shared initialisation) or "xinit" (the cross-init base)
    data: str | None  # "teacher" or "control" for students; None for evaluated bases
    role: str  # "base", "teacher", "treatment" or "control"
    colour: str | None = None  # in the plot; None: not plotted


ARMS: tuple[Arm, ...] = (
    Arm("base", "base model", "base", None, "base", "#999999"),
    Arm("teacher", "teacher", "base", None, "teacher", "#7b3294"),
    Arm("control", "control student", "base", "control", "control", "#4575b4"),
    Arm("treatment", "treatment student", "base", "teacher", "treatment", "#d73027"),
    Arm("xinit_base", "cross-init base", "xinit", None, "base"),
    Arm("xinit_control", "cross-init control student", "xinit", "control", "control"),
    Arm("xinit_treatment", "cross-init student", "xinit", "teacher", "treatment", "#fdae61"),
)
BY_NAME = {a.name: a for a in ARMS}
STUDENTS = tuple(a for a in ARMS if a.data is not None)
ARM_LABELS = {a.name: a.label for a in ARMS}

# (comparison name, arm, its control arm, label)
COMPARISONS: tuple[tuple[str, str, str, str], ...] = (
    ("treatment_vs_control", "treatment", "control", "treatment - control"),
    (
        "xinit_treatment_vs_xinit_control",
        "xinit_treatment",
        "xinit_control",
        "cross-init treatment - cross-init control",
    ),
)
