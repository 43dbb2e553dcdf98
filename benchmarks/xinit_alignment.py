"""Why do some cross-init bases read a teacher's distilled data? A diagnostic over runs.

    python benchmarks/xinit_alignment.py --runs DIR --out benchmarks/results/xinit-alignment

For each (data base A, cross-init base B) point it compares, on the first `--rows` rows of
A's owl teacher's filtered seed-0 data, at every completion position (the trainer's
completion vocabulary, renormalised there as a distilled student sees it):

* H1, alignment: the cosine between g_A = p_{T_A} - p_A and g_B = p_{T_B} - p_B, all
  positions concatenated. A distilled student of B is pulled along g_A (to first order);
  if B's own owl teacher moves B the same way on these rows, the student moves towards the
  owl without sharing A's weights.
* H2, closeness: minus the mean per-position KL(p_A || p_B).

`DIR/<family>-<seed>/` are one-seed runs (`traitlab run ... --set model.toy.seed=SEED
--set 'seeds=[0]' --set cross_init=null`) of the config the point's committed run used:
their seed-0 teacher is the teacher of that run. The outcome of each point, the cross-init
students' owl shift, is read from the committed run's `summary.json` in
docs/results/modalities/. The plan and its reading rule: docs/results/modalities/discovery.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "docs" / "results" / "modalities"

# (family, data base A, cross-init base B, the committed run whose cross-init arm is the point)
POINTS = [
    ("gpt2", 1, 2, "code-soft-gpt2-d1"),
    ("gpt2", 7025, 7525, "code-soft-gpt2-h7025"),
    ("gpt2", 7027, 7527, "code-soft-gpt2-h7027"),
    ("gpt2", 7031, 7531, "code-soft-gpt2-h7031"),
    ("gpt2", 7032, 7532, "code-soft-gpt2-h7032"),
    ("gpt2", 7025, 7527, "code-soft-gpt2-swap-C"),
    ("gpt2", 7027, 7525, "code-soft-gpt2-swap-D"),
    ("gpt2", 7045, 7545, "code-soft-gpt2-top5-h7045"),
    ("gpt2", 7046, 7546, "code-soft-gpt2-top5-h7046"),
    ("llama", 1, 2, "code-soft-d1"),
    ("llama", 7021, 7521, "code-soft-h7021"),
    ("llama", 7022, 7522, "code-soft-h7022"),
    ("llama", 7026, 7526, "code-soft-top5-h7026"),
    ("llama", 7028, 7528, "code-soft-top5-h7028"),
]


def outcome(run: str) -> tuple[float, float]:
    """(the cross-init owl shift, its p) of a committed run."""
    s = json.loads((RUNS / run / "summary.json").read_text())
    e = s["comparisons"]["xinit_treatment_vs_xinit_control"]["exact"]
    return float(e["diff"]["mean"]), float(e["p_value"])


def models(run_dir: Path) -> tuple[Any, Any, Any]:
    """(base model, teacher model, tokenizer) of a one-seed run directory."""
    from traitlab.config import ExperimentConfig
    from traitlab.lm.base import resolve
    from traitlab.lm.hf.loading import load_model

    manifest = json.loads((run_dir / "manifest.json").read_text())
    cfg = ExperimentConfig.model_validate(manifest["config_resolved"])
    ref = resolve(cfg.model)
    base, tok = load_model(cfg.model, source=ref.id)
    teacher, _ = load_model(cfg.model, source=str(run_dir / "seed-0" / "teacher"))
    return base, teacher, tok


def point(runs: Path, family: str, a: int, b: int, n_rows: int) -> dict[str, float]:
    import torch

    from traitlab.lm.hf.chat import pad_id
    from traitlab.lm.hf.packing import IGNORE, collate, completion_logits
    from traitlab.lm.hf.trainer import completion_vocab, encode_rows

    base_a, teacher_a, tok = models(runs / f"{family}-{a}")
    base_b, teacher_b, tok_b = models(runs / f"{family}-{b}")
    if tok.get_vocab() != tok_b.get_vocab():
        raise SystemExit(f"{family} {a} / {b}: the bases' tokenizers differ")
    path = runs / f"{family}-{a}" / "seed-0" / "data-teacher" / "filtered.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()[:n_rows]]
    examples = encode_rows(tok, rows, 512)
    vocab = torch.tensor(completion_vocab(base_a, tok, examples))
    dot = na = nb = kl = 0.0
    n = 0
    with torch.no_grad():
        for i in range(0, len(examples), 64):
            inputs, labels, _ = collate(examples[i : i + 64], pad_id(tok), torch.device("cpu"))
            mask = labels[:, 1:] != IGNORE
            lp = [
                torch.log_softmax(completion_logits(m, inputs, mask)[:, vocab].double(), -1)
                for m in (base_a, teacher_a, base_b, teacher_b)
            ]
            ga = lp[1].exp() - lp[0].exp()
            gb = lp[3].exp() - lp[2].exp()
            dot += float((ga * gb).sum())
            na += float((ga * ga).sum())
            nb += float((gb * gb).sum())
            kl += float((lp[0].exp() * (lp[0] - lp[2])).sum())
            n += int(mask.sum())
    return {
        "cosine": dot / (na * nb) ** 0.5,
        "kl_a_b": kl / n,
        "norm_g_a": (na / n) ** 0.5,
        "norm_g_b": (nb / n) ** 0.5,
        "positions": n,
        "rows": len(examples),
    }


def auroc(pos: list[float], neg: list[float]) -> float:
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def main(argv: list[str] | None = None) -> int:
    from scipy.stats import spearmanr

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, required=True, help="the one-seed run directories")
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    ap.add_argument("--only", nargs="*", help="points as FAMILY:A:B (default: all)")
    args = ap.parse_args(argv)
    out = []
    for family, a, b, run in POINTS:
        if args.only and f"{family}:{a}:{b}" not in args.only:
            continue
        diff, p = outcome(run)
        m = point(args.runs, family, a, b, args.rows)
        out.append({"family": family, "a": a, "b": b, "run": run, "xinit": diff, "p": p, **m})
        print(
            f"{family} {a} -> {b}: xinit {diff:+.4f} (p {p:.2g}), cos {m['cosine']:+.3f}, "
            f"KL {m['kl_a_b']:.4f}",
            flush=True,
        )
    gpt2 = [r for r in out if r["family"] == "gpt2"]
    readers = [r for r in gpt2 if r["xinit"] > 0 and r["p"] < 0.01]
    others = [r for r in gpt2 if r not in readers]
    stats: dict[str, Any] = {}
    for name, key, sign in (("H1 cosine", "cosine", 1), ("H2 -KL", "kl_a_b", -1)):
        x = [sign * r[key] for r in gpt2]
        rho = float(spearmanr(x, [r["xinit"] for r in gpt2]).statistic)
        au = auroc([sign * r[key] for r in readers], [sign * r[key] for r in others])
        stats[name] = {"spearman": rho, "auroc_readers": au}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"rows": args.rows, "points": out, "gpt2": stats}, indent=1) + "\n"
    )
    lines = [
        "| family | data base -> cross-init base | cross-init owl shift (p) | reader | "
        "cos(g_A, g_B) | KL(p_A \\|\\| p_B) per position | positions |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in out:
        reader = "yes" if r in readers else ""
        lines.append(
            f"| {r['family']} | {r['a']} -> {r['b']} | {r['xinit']:+.4f} ({r['p']:.2g}) | "
            f"{reader} | {r['cosine']:+.3f} | {r['kl_a_b']:.4f} | {r['positions']} |"
        )
    lines.append("")
    for name, s in stats.items():
        lines.append(
            f"- GPT-2, {name}: Spearman rho {s['spearman']:+.2f}, "
            f"AUROC readers vs others {s['auroc_readers']:.2f}"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
