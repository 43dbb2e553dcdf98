"""Dataset teachers and their nulls at several fine-tune lengths, rescored offline.

    python benchmarks/dataset_lengths.py RUN_DIR:AUDIT_DIR [...] --dataset PATH --work DIR
        [--steps 10 20 40 60 80] [--out lengths.md]

The probe behind `counterfactual.dataset_steps` (docs/audit.md, the fifth split's plan).
RUN_DIR is a misalignment run (`bench_robustness.py` base directory) and AUDIT_DIR the
`bench_audit_misalignment.py` output that audited it with `counterfactual.datasets:
{misaligned: PATH}` (its neutral datasets and `counterfactual.npz` files are read). For each
run and seed, the datasets `teacher-S` (positive), `own-S` and `neutral-S` (negatives) get
their rows' log-likelihoods under the base and under the dataset teacher and its null at
every length of `--steps` (teachers cached like the audit's; the rows are the audit's own,
its reference rebuilt with the same seed), saved to `WORK/<run>/<dataset>.npz`
(resumable). The table compares ways of using the lengths, each as the lowest positive t
against the highest negative t.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_audit_misalignment import OVERRIDES, _base  # noqa: E402

Lifts = dict[str, np.ndarray]


def score_datasets(run: Path, audit: Path, dataset: str, steps: list[int], work: Path) -> None:
    from traitlab.audit import AuditConfig
    from traitlab.audit.counterfactual import dataset_teachers
    from traitlab.config.base import apply_overrides
    from traitlab.lm.base import opened

    sets = [
        f"counterfactual.datasets={{misaligned: {dataset}}}",
        f"counterfactual.dataset_steps={steps}",
    ]
    cfg = AuditConfig.model_validate(apply_overrides(OVERRIDES, sets))
    base = _base(run, "model")
    with contextlib.ExitStack() as stack:
        # Every model opened once for the run's nine datasets.
        lm = stack.enter_context(opened(base))
        teachers, nulls = dataset_teachers(base, lm, cfg.counterfactual)
        models = {
            f"{k}{n}": stack.enter_context(opened(r))
            for n, t_ref, n_ref in zip(steps, teachers[0], nulls[0], strict=True)
            for k, r in (("T", t_ref), ("N", n_ref))
        }
        for seed in range(3):
            _score_seed(run, audit, seed, work, cfg, base, lm, models)


def _score_seed(
    run: Path,
    audit: Path,
    seed: int,
    work: Path,
    cfg: Any,
    ref: Any,
    lm: Any,
    models: dict[str, Any],
) -> None:
    """One seed's three datasets, scored under the base (`ref`, opened as `lm`) and
    `models`."""
    from traitlab.audit.counterfactual import _loglik
    from traitlab.audit.run import audit_pairs
    from traitlab.core.files import read_jsonl

    sd = run / f"seed-{seed}"
    jobs = {
        f"teacher-{seed}": sd / "data-teacher" / "filtered.jsonl",
        f"own-{seed}": sd / "data-control" / "filtered.jsonl",
        f"neutral-{seed}": audit / run.name / f"neutral-{seed}" / "data.jsonl",
    }
    for name, path in jobs.items():
        f = work / run.name / f"{name}.npz"
        if f.is_file() or not path.is_file():
            continue
        rows, _, _ = audit_pairs(ref, read_jsonl(path), cfg, lm=lm)
        arr = {"base": _loglik(lm, rows)}
        arr.update({k: _loglik(m, rows) for k, m in models.items()})
        # the probe's two null teachers, as the audit computed them on the same rows
        saved = np.load(audit / run.name / name / "counterfactual.npz")
        arr["probe_nulls"] = saved["datasets.null_lift"][:2]
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f.name + ".tmp.npz")
        np.savez(tmp, **arr)
        tmp.replace(f)
        print(run.name, name, len(rows), flush=True)


def _t(x: np.ndarray) -> float:
    from traitlab.audit.verdict import t_stat

    return float(t_stat(x, axis=0))


def _best(c: list[np.ndarray]) -> np.ndarray:
    return max(c, key=lambda x: float(x.mean()))


def candidates(steps: list[int]) -> dict[str, Callable[[Lifts, Lifts, list[np.ndarray]], float]]:
    """Ways to score one dataset from its teachers' (T) and nulls' (N) lifts per length and
    the other no-trait lifts (the base's zeros, the probe's nulls): name -> t."""
    from traitlab.audit.lifts import mix_lifts

    first = str(steps[0])
    grids = [steps[:k] for k in range(3, len(steps) + 1)]
    out: dict[str, Callable[[Lifts, Lifts, list[np.ndarray]], float]] = {
        "as run (the first length, the best null)": lambda T, N, o: _t(
            T[first] - _best(o + [N[first]])
        ),
        "the best teacher length against the best null of any length": lambda T, N, o: _t(
            _best(list(T.values())) - _best(o + list(N.values()))
        ),
        "the teacher at the length whose null explains the data best": lambda T, N, o: _t(
            T[max(N, key=lambda n: float(N[n].mean()))] - _best(o + list(N.values()))
        ),
        "the worst length's paired t (teacher vs null as long)": lambda T, N, o: min(
            _t(T[n] - N[n]) for n in T
        ),
    }
    for g in grids:
        keys = [str(n) for n in g]

        def mixed(T: Lifts, N: Lifts, o: list[np.ndarray], keys: list[str] = keys) -> float:
            teacher = mix_lifts(np.stack([T[k] for k in keys]))
            return _t(teacher - mix_lifts(np.stack(o + [N[k] for k in keys])))

        out[
            f"per row, the mixture of the teachers at {g[0]}-{g[-1]} steps against the mixture of every no-trait candidate"
        ] = mixed
    return out


def table(work: Path, steps: list[int]) -> str:
    per: dict[str, tuple[list[float], list[float]]] = {}
    for f in sorted(work.glob("*/*.npz")):
        z = np.load(f)
        b = z["base"]
        T = {str(n): z[f"T{n}"] - b for n in steps}
        N = {str(n): z[f"N{n}"] - b for n in steps}
        others = [np.zeros_like(b), *z["probe_nulls"][:2]]
        for name, fn in candidates(steps).items():
            pos, neg = per.setdefault(name, ([], []))
            (pos if f.stem.startswith("teacher") else neg).append(fn(T, N, others))
    lines = ["| candidate | lowest positive | highest negative |", "|---|---:|---:|"]
    for name, (pos, neg) in per.items():
        lines.append(f"| {name} | {min(pos):+.2f} | {max(neg):+.2f} |")
    n_pos, n_neg = len(next(iter(per.values()))[0]), len(next(iter(per.values()))[1])
    return "\n".join(lines) + f"\n\n{n_pos} positives, {n_neg} negatives.\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs", nargs="+", help="RUN_DIR:AUDIT_DIR")
    ap.add_argument("--dataset", required=True, help="the dataset teachers' chat JSONL")
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40, 60, 80])
    ap.add_argument("--out")
    a = ap.parse_args()
    for pair in a.pairs:
        run, audit = pair.split(":")
        score_datasets(Path(run), Path(audit), a.dataset, a.steps, Path(a.work))
    text = table(Path(a.work), a.steps)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
