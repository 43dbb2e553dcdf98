"""`kind: both` audits rescored with nulls of the same kind, from their saved per-row scores.

    python benchmarks/matched_nulls.py AUDIT_DIR [AUDIT_DIR ...] --out matched.md

The audit's `null` statistic compares every option's teacher with the best no-trait
explanation of the data, fine-tuned null teachers and neutral system prompts alike. Here a
prompted teacher is compared with the best prompted null only (or the base) and a fine-tuned
one with the fine-tuned nulls only, so that a fine-tuned null cannot mask a prompted
teacher's lift; each option then counts with the kind that leads its own null by more. Reads
every `counterfactual.npz` (with its `audit.json`) under the directories; trains nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from audit_tables import saved_results  # noqa: E402


def _top(per_probe: dict[str, tuple[Any, np.ndarray, list[str]]]) -> dict[str, Any]:
    """The audit's verdict over probes of {probe: (result, values [options, rows], kinds)}:
    the option with the largest mean, its t over rows, and the kind its teacher was."""
    from traitlab.audit.lifts import row_t
    from traitlab.audit.verdict import findings, verdict

    probes = {
        p: findings(r.options, x.T, z=row_t(x), by_effect=True)
        for p, (r, x, _) in per_probe.items()
    }
    v = verdict({"counterfactual": probes}, threshold=0.0)
    r, _, kinds = per_probe[v["probe"]]
    return {"option": v["trait"], "t": v["z"], "kind": kinds[r.options.index(v["trait"])]}


def matched(r: Any, n_prompted: int) -> tuple[np.ndarray, list[str]]:
    """[options, rows] and kinds: each option's teachers against the nulls of their own kind
    (the fine-tuned nulls first, the prompted ones last, as the audit saves them), the kind
    that leads its null by more counting."""
    from traitlab.audit.lifts import CounterfactualResult

    n_ft = len(r.null_lift) - n_prompted
    ft = CounterfactualResult(r.probe, r.options, r.scores, r.lift, r.null_lift[:n_ft]).vs_null
    pr = CounterfactualResult(
        r.probe, r.options, r.scores, r.prompt_lift, r.null_lift[n_ft:]
    ).vs_null
    pick = pr.mean(axis=1) > ft.mean(axis=1)
    return np.where(pick[:, None], pr, ft), ["prompted" if b else "finetuned" for b in pick]


def rescore(audit_dir: Path, n_prompted: int) -> dict[str, dict[str, Any]]:
    """Per statistic ('audit': as the audit scored it; 'matched'), the top option."""
    res = saved_results(audit_dir)
    if not res or any(r.prompt_lift is None for r in res):
        raise SystemExit(f"{audit_dir}: no prompted teachers' scores (not a kind: both audit)")
    return {
        "audit": _top({r.probe: (r, r.vs_null, r.kinds) for r in res}),
        "matched": _top({r.probe: (r, *matched(r, n_prompted)) for r in res}),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    lines = [
        "| dataset | audit: top option, t (kind) | matched nulls: top option, t (kind) |",
        "|---|---|---|",
    ]
    for d in a.dirs:
        for npz in sorted(d.rglob("counterfactual.npz")):
            cfg = json.loads((npz.parent / "audit.json").read_text())["config"]
            r = rescore(npz.parent, cfg["counterfactual"]["prompted_nulls"])
            cells = [f"{r[k]['option']} {r[k]['t']:.1f} ({r[k]['kind']})" for k in r]
            lines.append(f"| {npz.parent.relative_to(d.parent)} | {cells[0]} | {cells[1]} |")
    text = "\n".join(lines) + "\n"
    if a.out:
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
