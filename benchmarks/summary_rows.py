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
        # Steps each seed's teacher took (fewer than planned: stopped by teacher.keep_numbers).
        "teacher_steps": [t.get("steps") for t in (q.get("teachers") or {}).values()],
        "control": arms["control"]["exact"]["mean"],
        "treatment": arms["treatment"]["exact"]["mean"],
    }
