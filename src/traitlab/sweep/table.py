"""The sweep's tidy table: one row per cell, from its summary.json, plus what a sweep adds
(removal against the baseline cell, utility cost, time and the shared cache's savings)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from traitlab.core import runs
from traitlab.core.errors import TraitlabError
from traitlab.core.files import atomic_write_text
from traitlab.core.outputs import STAGE_MARKER
from traitlab.core.stats import ratio_ci


def _per_seed(summary: dict[str, Any], arm: str, method: str) -> dict[str, float]:
    return (summary["arms"].get(arm, {}).get(method) or {}).get("per_seed") or {}


def seed_diffs(summary: dict[str, Any], method: str, pair: tuple[str, str]) -> dict[str, float]:
    """Per seed: treatment - control (or the cross-init pair) for one method."""
    t, c = (_per_seed(summary, a, method) for a in pair)
    return {s: t[s] - c[s] for s in t if s in c}


def _utility(summary: dict[str, Any], arm: str) -> dict[str, Any]:
    return summary["arms"].get(arm, {}).get("utility") or {}


def cell_row(label: str, params: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    """The table's row for one cell (its swept values as `set.<path>` columns)."""
    row: dict[str, Any] = {"cell": label}
    row.update(
        {
            f"set.{k}": v if not isinstance(v, (list, dict)) else json.dumps(v)
            for k, v in params.items()
        }
    )
    row["seconds"] = round(res.get("seconds", math.nan), 1)
    if "error" in res:
        return {**row, "status": "failed", "error": res["error"]}
    s = res["summary"]
    method = s["verdict"].get("method", "exact")
    comp = s["comparisons"].get("treatment_vs_control", {}).get(method, {})
    diff = comp.get("diff") or {}
    q = s.get("data_quality") or {}
    control = s["arms"]["control"][method]["mean"]
    treatment = s["arms"]["treatment"][method]["mean"]
    row.update(
        status="ok",
        method=method,
        seeds=len(s["seeds"]),
        base=s["arms"].get("base", {}).get(method, {}).get("mean"),
        control=control,
        treatment=treatment,
        diff=diff.get("mean"),
        diff_lo=diff.get("lower"),
        diff_hi=diff.get("upper"),
        p=comp.get("p_value"),
        ratio=treatment / control if control else None,
        xinit_diff=s["verdict"].get("cross_init_diff"),
        xinit_p=s["verdict"].get("cross_init_p_value"),
        teacher_pass_rate=q.get("teacher_pass_rate"),
        control_pass_rate=q.get("control_pass_rate"),
        rows=q.get("rows_kept"),
    )
    for arm, a in (s.get("falsifier") or {}).get("arms", {}).items():
        last = a["by_steps"][-1]
        row[f"{arm}_half_life_steps"] = a["half_life_steps"]
        row[f"{arm}_retention_at_{last['steps']}"] = last["retention"]["mean"]
    gens = s.get("generations")
    if gens:
        last = gens["by_generation"][-1]
        row["half_life_generations"] = gens["half_life_generations"]
        row[f"retention_generation_{last['generation']}"] = last["retention"]["mean"]
    for arm in ("control", "treatment"):
        u = _utility(s, arm)
        if u:
            row[f"{arm}_heldout_loss"] = u["heldout_loss"]
            row[f"{arm}_own_pass_rate"] = u["pass_rate"]
    return row


def add_removal(
    rows: list[dict[str, Any]], results: dict[str, Any], baseline_of: dict[str, str]
) -> None:
    """removal = 1 - diff / the baseline cell's diff, paired over the seeds both share, with
    Fieller's interval (unbounded ends left empty); utility cost against the baseline's
    control student: the relative rise of its held-out loss, the drop of its pass rate."""
    for row in rows:
        s = results.get(row["cell"], {}).get("summary")
        base = results.get(baseline_of.get(row["cell"], ""), {}).get("summary")
        if s is None or base is None or baseline_of[row["cell"]] == row["cell"]:
            continue
        row["baseline"] = baseline_of[row["cell"]]
        method = base["verdict"].get("method", "exact")
        b = seed_diffs(base, method, ("treatment", "control"))
        b_util = _utility(base, "control")
        d = seed_diffs(s, method, ("treatment", "control"))
        common = sorted(set(d) & set(b))
        if common:
            ratio, lo, hi = ratio_ci([d[k] for k in common], [b[k] for k in common])
            row["removal"] = 1 - ratio if math.isfinite(ratio) else None
            row["removal_lo"] = 1 - hi if hi is not None else None
            row["removal_hi"] = 1 - lo if lo is not None else None
        u = _utility(s, "treatment")
        if u and b_util:
            row["utility_loss_rise"] = u["heldout_loss"] / b_util["heldout_loss"] - 1
            row["utility_pass_drop"] = b_util["pass_rate"] - u["pass_rate"]


def stage_work(cell_dirs: list[Path]) -> tuple[float, float]:
    """(seconds of every stage the cells hold, seconds of the distinct ones): their
    difference is the work the shared store saved."""
    total, unique = 0.0, {}
    for d in cell_dirs:
        for marker in d.rglob(STAGE_MARKER):
            try:
                info = runs.read_json(marker)
            except TraitlabError:  # a half-written marker of a killed run: not a stage
                continue
            secs = float(info.get("seconds") or 0.0)
            total += secs
            unique[info.get("key")] = secs
    return total, sum(unique.values())


def columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def write_tables(rows: list[dict[str, Any]], out: Path) -> list[str]:
    """table.csv always, table.parquet when pyarrow is installed; the files written."""
    cols = columns(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    atomic_write_text(out / "table.csv", buf.getvalue())
    written = ["table.csv"]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    table = pa.table(
        {
            k: [
                None
                if r.get(k) is None
                else str(r.get(k))
                if isinstance(r.get(k), (list, dict))
                else r.get(k)
                for r in rows
            ]
            for k in cols
        }
    )
    tmp = out / ".table.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.replace(out / "table.parquet")
    return [*written, "table.parquet"]
