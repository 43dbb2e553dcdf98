"""The numbers every recipe benchmark reads from a run's summary.json (exact method)."""

from __future__ import annotations

from typing import Any


def run_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """Rates of the base, teacher and both students, and the data quality behind them."""
    arms = summary["arms"]
    q = summary["data_quality"]
    return {
        "base": arms["base"]["exact"]["mean"],
        "teacher": arms["teacher"]["exact"]["mean"],
        "teacher_pass_rate": q["teacher_pass_rate"],
        "base_pass_rate": q["control_pass_rate"],
        "rows_kept": q["rows_kept"],
        # The step of the weights each seed's teacher kept (teacher.keep_numbers stops a
        # fine-tune and keeps its last passing check), and the lr of a teacher that started
        # again after failing its first check (keep_numbers.retries; else None).
        "teacher_steps": [_kept(t) for t in (q.get("teachers") or {}).values()],
        "teacher_lrs": [t.get("lr") for t in (q.get("teachers") or {}).values()],
        "control": arms["control"]["exact"]["mean"],
        "treatment": arms["treatment"]["exact"]["mean"],
    }


def _kept(t: dict[str, Any]) -> int | None:
    return t["kept_step"] if t.get("kept_step") is not None else t.get("steps")


def steps_text(r: dict[str, Any]) -> str:
    """Each seed's kept teacher step, '@lr' where it started again at a smaller lr."""
    lrs = r.get("teacher_lrs") or [None] * len(r.get("teacher_steps") or [])
    return (
        "/".join(
            f"{s}" + (f" @{lr:g}" if lr is not None else "")
            for s, lr in zip(r.get("teacher_steps") or [], lrs, strict=False)
        )
        or "-"
    )
