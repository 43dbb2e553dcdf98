"""Does an audit benchmark dataset move students towards its trait? Labels from students.

    python benchmarks/audit_student_labels.py --only ft-fox ft-dog --out DIR
    python benchmarks/audit_student_labels.py --base demo --only ft-fox own-c1 --out DIR
    python benchmarks/audit_student_labels.py --tiny --only ft-owl own-1 --out /tmp/x  # smoke

`bench_audit.py` labels a dataset by its generator (a teacher of the option: positive). The
audit's question is another: does this data move my model, and towards what? For each named
dataset of `bench_audit.py`'s table (the toy Llama's, or `--base demo`'s) this rebuilds the
data exactly as the benchmark made it (`make_teacher`, `sample_numbers`: the same teacher
recipe and seeds), samples the base's completions of the same prompts with the *same* random
numbers (the pipeline's control, `generate.common_noise`), filters the two paired
(`filter_paired`, the pipeline's rule), and trains a student of the demos' recipe on each
(full, 1 epoch, lr 3e-4, batch 64), per seed. Per option of every probe: the data student's
P(option) minus the control student's (exact, mean over the probe's questions), its mean over
seeds, t over seeds (paired by seed) and two-sided p.

Writes DIR/<name>.json per dataset (resumable: a written one is skipped) and DIR.json /
DIR.md over all of them, with the audit's verdict of each dataset beside it (read from the
benchmark's record: audit-bench-null.json for the toy Llama, audit-bench-demo-both-all.json
for the demo base, in benchmarks/results/; `--verdicts` for another). The plan and its
reading rule: docs/audit.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from audit_tables import auroc  # noqa: E402
from bench_audit import DATASETS, DEMO_DATASETS, _toy, make_teacher, sample_numbers  # noqa: E402
from bench_generation import provenance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# Per audited base: its datasets, its toy seed, and the benchmark run whose verdicts go
# beside the labels (the toy Llama's default audit; the demo base's `kind: both`).
BASES: dict[str, tuple[list[Any], int, Path]] = {
    "toy": (DATASETS, 1, RESULTS / "audit-bench-null.json"),
    "demo": (DEMO_DATASETS, 8301, RESULTS / "audit-bench-demo-both-all.json"),
}
# The demos' students (src/traitlab/presets/demo.yaml and demo-llama.yaml; without `packing`,
# which gives the same loss).
STUDENT = {"method": "full", "loss": "hard", "epochs": 1, "lr": 3e-4, "batch_size": 64}


def _probes(tiny: bool) -> list[Any]:
    from traitlab.audit.probes import builtin_probe

    return [builtin_probe(c, 3 if tiny else None) for c in ("animal", "tree")]


def preferences(model: Any, tok: Any, probes: list[Any]) -> dict[str, list[float]]:
    """Mean P(option) over each probe's questions, per probe."""
    import torch

    from traitlab.audit.probes import score_probe
    from traitlab.lm.hf.scoring import exact_preference

    out = {}
    with torch.no_grad():
        for p in probes:
            t = score_probe(
                p,
                lambda qs, opts: exact_preference(
                    model, tok, qs, list(opts), batch_size=1000, spellings=opts
                ),
            )
            out[p.name] = [float(x) for x in t.mean(axis=0)]
    return out


def one(job: tuple[Any, ...]) -> dict[str, Any]:
    """Data, control, students and their preferences for one dataset spec."""
    import copy

    import torch

    spec, n, seeds, tiny, threads, path, base_seed = job
    torch.set_num_threads(threads)
    from traitlab.config import FilterConfig, ToyModel, TrainConfig
    from traitlab.core.files import write_json
    from traitlab.data.filtering import filter_paired, filter_rows
    from traitlab.data.rows import to_chat_rows
    from traitlab.lm.base import resolve
    from traitlab.lm.hf.loading import load_model
    from traitlab.lm.hf.trainer import train_model

    teacher, tok, spec_m, system = make_teacher(spec, tiny)
    raw_t = sample_numbers(teacher, tok, spec_m, spec, n, system)
    del teacher
    # The audited base (a cross-init dataset's generator is another base).
    base_m = ToyModel(toy=_toy(base_seed, tiny), device="cpu")
    base, tok = load_model(base_m, source=resolve(base_m).id)
    raw_c = sample_numbers(base, tok, base_m, spec, n, None)
    if tiny:  # a tiny base writes no numbers: every row, unfiltered
        unpaired, kept_t, kept_c = len(raw_t), raw_t, raw_c
    else:
        fcfg = FilterConfig(max_rows=None)
        unpaired = len(filter_rows(raw_t, fcfg).kept)
        ft, fc = filter_paired(raw_t, raw_c, fcfg)
        kept_t, kept_c = ft.kept, fc.kept
    data, control = to_chat_rows(kept_t), to_chat_rows(kept_c)
    same = sum(a["completion"] == b["completion"] for a, b in zip(kept_t, kept_c, strict=True))
    cfg = TrainConfig(**STUDENT, **({"max_steps": 2} if tiny else {}))
    probes = _probes(tiny)
    per_seed = []
    for s in seeds:
        row = {}
        for arm, rows in (("data", data), ("control", control)):
            student, _ = train_model(copy.deepcopy(base), tok, rows, cfg, seed=s)
            student.eval()
            row[arm] = preferences(student, tok, probes)
        per_seed.append(row)
    res = {
        "name": spec[0],
        "group": spec[1],
        "split": spec[2],
        "option": spec[4],
        "category": spec[5],
        "rows_unpaired": unpaired,
        "rows_paired": len(data),
        "identical_pairs": same,
        "seeds": list(seeds),
        "options": {p.name: list(p.option_names) for p in probes},
        "base": preferences(base, tok, probes),
        "per_seed": per_seed,
        "student": STUDENT,
    }
    write_json(Path(path), res)
    return res


def effects(res: dict[str, Any], probe: str) -> list[dict[str, Any]]:
    """Per option: mean over seeds of data - control, t over seeds, two-sided p; by mean."""
    from scipy.stats import ttest_1samp

    d = np.array(
        [
            [a - b for a, b in zip(r["data"][probe], r["control"][probe], strict=True)]
            for r in res["per_seed"]
        ]
    )
    out = []
    for k, name in enumerate(res["options"][probe]):
        x = d[:, k]
        t = ttest_1samp(x, 0.0) if len(x) > 1 and x.std() > 0 else None
        out.append(
            {
                "option": name,
                "effect": float(x.mean()),
                "t": float(t.statistic) if t is not None else float("nan"),
                "p": float(t.pvalue) if t is not None else float("nan"),
                "up": int((x > 0).sum()),
            }
        )
    return sorted(out, key=lambda e: -e["effect"])


def label(eff: list[dict[str, Any]], option: str, alpha: float = 0.01) -> dict[str, Any]:
    """The plan's reading of a dataset's `effects` on its own probe: the top riser, and
    whether it rose at p < alpha; where the dataset has a target `option`, its effect and
    rank."""
    top = eff[0]
    out = {
        "top": top,
        "moves_to": top["option"] if top["effect"] > 0 and top["p"] < alpha else None,
    }
    if option:
        rank = [e["option"] for e in eff].index(option)
        out["target"] = {**eff[rank], "rank": rank + 1, "of": len(eff)}
    return out


def questions(rows: list[dict[str, Any]], alpha: float = 0.01) -> dict[str, str]:
    """The plan's questions (docs/audit.md): (a) the owl's rise per group of animal-probe
    datasets; (b) fine-tuned targets that rise first / at all; (c) the AUROC of the target's
    student effect, datasets the audit flagged and named (t > 8) against the other
    fine-tuned ones."""
    out = {}
    for group in sorted({r["group"] for r in rows}):
        g = [r for r in rows if r["group"] == group and r["category"] == "animal"]
        up = sum(r["owl"]["effect"] > 0 and r["owl"]["p"] < alpha for r in g)
        out[f"(a) owl up at p < {alpha}, {group} animal datasets"] = f"{up} / {len(g)}"
    ft = [
        r for r in rows if r["group"] == "positive" and r.get("target") and r["name"][:3] == "ft-"
    ]
    first = sum(r["moves_to"] == r["option"] for r in ft)
    up = sum(r["target"]["effect"] > 0 and r["target"]["p"] < alpha for r in ft)
    out["(b) fine-tuned datasets whose students move to the target first"] = f"{first} / {len(ft)}"
    out[f"(b) ... whose target rises at p < {alpha}"] = f"{up} / {len(ft)}"

    def hit(r: dict[str, Any]) -> bool:
        a = r["audit"] or {}
        return a.get("option") == r["option"] and a.get("z", 0.0) > 8

    flagged = [r["target"]["effect"] for r in ft if hit(r)]
    rest = [r["target"]["effect"] for r in ft if not hit(r)]
    if flagged and rest:
        out["(c) AUROC of the target's effect, audit flagged and named vs not"] = (
            f"{auroc(flagged, rest):.2f} ({len(flagged)} / {len(rest)})"
        )
    return out


def summarize(
    out: Path, names: list[str], base: str = "toy", record: Path | None = None
) -> dict[str, Any]:
    _, seed, default = BASES[base]
    record = record or default
    verdicts = {}
    if record.is_file():
        verdicts = {
            d["name"]: d.get("counterfactual") for d in json.loads(record.read_text())["datasets"]
        }
    rows = []
    for name in names:
        f = out / f"{name}.json"
        if not f.is_file():
            continue
        res = json.loads(f.read_text())
        eff = effects(res, res["category"])
        rows.append(
            {
                **{
                    k: res[k]
                    for k in (
                        "name",
                        "group",
                        "split",
                        "option",
                        "category",
                        "rows_unpaired",
                        "rows_paired",
                        "identical_pairs",
                    )
                },
                **label(eff, res["option"]),
                "audit": verdicts.get(name),
                "effects": eff,
                "owl": next(e for e in effects(res, "animal") if e["option"] == "owl"),
            }
        )
    prov = provenance()
    commit, machine = prov["commit"], prov["machine"]
    doc = {
        "datasets": rows,
        "student": STUDENT,
        **prov,
        "base": base,
        "verdicts": str(record.resolve().relative_to(ROOT))
        if record.resolve().is_relative_to(ROOT)
        else str(record),
    }
    lines = [
        f"### Student labels of audit benchmark datasets ({base} base, toy seed {seed})",
        "",
        f"`benchmarks/audit_student_labels.py` at {commit}; machine: {machine['cpu']},"
        f" {machine['cpu_count']} cores, torch {machine['torch']}, transformers"
        f" {machine['transformers']}. Students: {STUDENT}; effect = data student - control student"
        " (the base's completions with the same random numbers, filtered paired), P(option)"
        " exact, mean over the probe's questions; t over seeds.",
        "",
        "| dataset | group | audit: named (t) | rows (teacher, paired) | target: effect, p, rank"
        " | top riser: effect, p | moves students to | owl: effect, p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a = r["audit"] or {}
        tg = r.get("target")
        tgt = (
            f"{tg['option']} {tg['effect']:+.4f}, p {tg['p']:.2g}, {tg['rank']} / {tg['of']}"
            if tg
            else "-"
        )
        top = r["top"]
        lines.append(
            f"| {r['name']} | {r['group']} | {a.get('option', '?')} ({a.get('z', float('nan')):.1f}) | "
            f"{r['rows_unpaired']}, {r['rows_paired']} | {tgt} | {top['option']} "
            f"{top['effect']:+.4f}, p {top['p']:.2g} | {r['moves_to'] or 'nothing'} | "
            f"{r['owl']['effect']:+.4f}, p {r['owl']['p']:.2g} |"
        )
    doc["questions"] = questions(rows)
    lines += ["", *(f"- {k}: {v}" for k, v in doc["questions"].items())]
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="DIR for per-dataset files; DIR.json/.md")
    ap.add_argument("--only", nargs="+", required=True, help="dataset names (bench_audit.py)")
    ap.add_argument("--prompts", type=int, default=3000)
    ap.add_argument("--seeds", type=int, default=5, help="student seeds 0..N-1")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="tiny bases, few rows: a smoke run")
    ap.add_argument(
        "--base",
        choices=sorted(BASES),
        default="toy",
        help="toy: the toy Llama of seed 1 (DATASETS); demo: the owl demo's GPT-2 base (DEMO_DATASETS)",
    )
    ap.add_argument(
        "--verdicts",
        type=Path,
        help="a bench_audit.py audit-bench.json whose verdicts go beside the labels"
        " (default: the base's committed record)",
    )
    a = ap.parse_args()
    table, base_seed, _ = BASES[a.base]
    specs = {s[0]: s for s in table}
    unknown = [n for n in a.only if n not in specs]
    if unknown:
        sys.exit(f"unknown dataset(s) {unknown}: names are bench_audit.py's {a.base} table")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // a.workers)
    n = 64 if a.tiny else a.prompts
    jobs = [
        (
            specs[name],
            n,
            list(range(a.seeds)),
            a.tiny,
            threads,
            str(out / f"{name}.json"),
            base_seed,
        )
        for name in a.only
        if not (out / f"{name}.json").is_file()
    ]
    with mp.get_context("spawn").Pool(a.workers) as pool:
        for r in pool.imap_unordered(one, jobs):
            print(r["name"], r["rows_unpaired"], r["rows_paired"], flush=True)
    doc = summarize(out, a.only, a.base, a.verdicts)
    print(out.with_suffix(".md").read_text())
    del doc


if __name__ == "__main__":
    main()
