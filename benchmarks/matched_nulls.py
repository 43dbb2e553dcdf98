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
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.audit.verdict import t_stat


def _best(rows: np.ndarray, n: int) -> np.ndarray:
    """The no-trait candidate (the base's zero lift, or one of `rows`) with the largest mean."""
    return max([np.zeros(n), *rows], key=lambda r: float(r.mean()))


def top(values: np.ndarray, options: list[str], kinds: np.ndarray) -> dict[str, Any]:
    """The option with the largest mean of `values` [options, rows], its t and kind."""
    mean = values.mean(axis=1)
    order = np.argsort(-mean)
    i = int(order[0])
    return {
        "option": options[i],
        "t": float(t_stat(values[i : i + 1], axis=1)[0]),
        "effect": float(mean[i]),
        "kind": "prompted" if kinds[i] else "finetuned",
        "margin": float(mean[i] - mean[order[1]]) if len(order) > 1 else None,
    }


def rescore(npz: Path, n_finetuned_nulls: int) -> dict[str, dict[str, Any]]:
    """Per statistic ('audit': as the audit scored it; 'matched'): the top option over all
    probes (by effect, as the audit's verdict picks)."""
    z = np.load(npz, allow_pickle=False)
    probes = sorted({k.split(".")[0] for k in z.files if k.endswith(".prompt_lift")})
    if not probes:
        raise SystemExit(f"{npz}: no prompted teachers' scores (not a kind: both audit)")
    best: dict[str, dict[str, Any]] = {}
    for p in probes:
        options = [str(o) for o in z[f"{p}.options"]]
        ft, pr, nulls = z[f"{p}.lift"], z[f"{p}.prompt_lift"], z[f"{p}.null_lift"]
        n = ft.shape[1]
        pick = pr.mean(axis=1) > ft.mean(axis=1)
        audit = np.where(pick[:, None], pr, ft) - _best(nulls, n)
        mf = ft - _best(nulls[:n_finetuned_nulls], n)
        mp = pr - _best(nulls[n_finetuned_nulls:], n)
        pick_m = mp.mean(axis=1) > mf.mean(axis=1)
        matched = np.where(pick_m[:, None], mp, mf)
        for name, values, kinds in (("audit", audit, pick), ("matched", matched, pick_m)):
            t = top(values, options, kinds)
            if name not in best or t["effect"] > best[name]["effect"]:
                best[name] = {"probe": p, **t}
    return best


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
            n_ft = cfg["counterfactual"]["null_teachers"] * len(cfg["probes"])
            r = rescore(npz, n_ft)
            cells = [f"{r[k]['option']} {r[k]['t']:.1f} ({r[k]['kind']})" for k in r]
            lines.append(f"| {npz.parent.relative_to(d.parent)} | {cells[0]} | {cells[1]} |")
    text = "\n".join(lines) + "\n"
    if a.out:
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
