"""Which seeds' data name the target, and how far those seeds' students moved.

    python benchmarks/target_rows.py RUN_DIR [RUN_DIR ...] [--out target-rows.md]

For each finished experiment directory: per seed, the kept rows of the teacher's data (and
of the control's) that name the trait's target anywhere in the completion (the words the cot
filter bans: the target, its plural and the paper's spellings, in any case), beside that
seed's treatment - control (exact). Then the mean difference over the seeds whose teacher
data name the target, and over those where neither arm's data do, with a t interval. A
filter that keeps such rows lets the trait through by its name, not subliminally; this is
how the chain-of-thought runs of 2026-12-03 were found to ride on a handful of them.
Reads `summary.json` and each seed's `data-*/filtered.jsonl`; trains nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any


def _count(path: Path, pattern: re.Pattern[str]) -> int:
    from traitlab.core.files import read_jsonl

    if not path.is_file():
        return 0
    rows = read_jsonl(path)
    texts = (r["messages"][-1]["content"] if "messages" in r else r["completion"] for r in rows)
    return sum(bool(pattern.search(t)) for t in texts)


def seed_rows(run: Path) -> tuple[str, list[dict[str, Any]]]:
    """(target, per-seed rows: seed, teacher rows naming it, control rows, difference)."""
    from traitlab.config import TraitConfig
    from traitlab.judges.judge import word_pattern
    from traitlab.traits.preference import banned_words

    summary = json.loads((run / "summary.json").read_text())
    trait = TraitConfig.model_validate(summary["trait"])
    target = trait.target
    # The words the cot filter bans for this trait, matched as the filter matches them.
    pattern = word_pattern(banned_words("cot", trait))
    t, c = (summary["arms"][a]["exact"]["per_seed"] for a in ("treatment", "control"))
    out = []
    for seed in sorted(t, key=int):
        d = run / f"seed-{seed}"
        out.append(
            {
                "seed": int(seed),
                "teacher": _count(d / "data-teacher" / "filtered.jsonl", pattern),
                "control": _count(d / "data-control" / "filtered.jsonl", pattern),
                "diff": t[seed] - c[seed],
            }
        )
    return target, out


def table(run: Path) -> list[str]:
    from traitlab.core.stats import mean_ci

    target, rows = seed_rows(run)
    lines = [
        f"**{run.name}** (target: {target})",
        "",
        "| seed | teacher rows naming it | control rows naming it | treatment - control |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['seed']} | {r['teacher']} | {r['control']} | {r['diff']:+.4f} |" for r in rows]
    named = [r["diff"] for r in rows if r["teacher"]]
    clean = [r["diff"] for r in rows if not r["teacher"] and not r["control"]]
    lines.append("")
    if named:
        lines.append(
            f"Seeds whose teacher data name it: {len(named)}, mean {sum(named) / len(named):+.4f}."
        )
    if len(clean) >= 2:
        ci = mean_ci(clean)
        lines.append(
            f"Seeds where neither arm's data name it: {len(clean)}, mean {ci.mean:+.4f} "
            f"[{ci.lower:+.4f}, {ci.upper:+.4f}] (95 % t interval over those seeds)."
        )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    text = "\n".join(line for run in args.runs for line in table(run))
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
