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
* The first-order prediction (Theorem 1 as the audit's screen takes it): the directional
  derivative of B's mean P(owl) along one step of B's own distillation on A's run's two
  datasets, control minus treatment gradient, Adam-scaled (`first_order`). The same with
  B = A, for the same-init students, is the sanity check.

`DIR/<family>-<seed>/` are one-seed runs (`traitlab run ... --set model.toy.seed=SEED
--set 'seeds=[0]' --set cross_init=null`) of the config the point's committed run used
(gpt2: configs/owl-code-soft-gpt2.yaml, llama: configs/owl-code-soft.yaml; `soft_top_k`
changes only students): their seed-0 teacher is the teacher of that run. `--at control`
reads `DIR/x-<family>-<A>-<B>/` instead: the same with the cross-init arm and the run's
`student.soft_top_k`, whose seed-0 students are the committed run's. The outcome of each point, the cross-init
students' owl shift, is read from the committed run's `summary.json` in
docs/results/modalities/. The plan and its reading rule: docs/results/modalities/discovery.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from audit_tables import auroc
from bench_generation import provenance

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
    examples = encode_rows(tok, rows_of(runs / f"{family}-{a}", "teacher", n_rows), 512)
    vocab = torch.tensor(completion_vocab(base_a, tok, examples))
    dot = na = nb = kl = 0.0
    n = 0
    with torch.no_grad():
        for i in range(0, len(examples), 64):
            inputs, labels, *_ = collate(examples[i : i + 64], pad_id(tok), torch.device("cpu"))
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


def rows_of(run_dir: Path, which: str, n_rows: int) -> list[dict[str, Any]]:
    path = run_dir / "seed-0" / f"data-{which}" / "filtered.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()[:n_rows]]


def run_top_k(run: str) -> int | None:
    """The committed run's `student.soft_top_k`."""
    m = json.loads((RUNS / run / "manifest.json").read_text())
    return m["config_resolved"]["student"].get("soft_top_k")


def first_order(
    runs: Path, family: str, a: int, s: int, n_rows: int, top_k: int | None = None
) -> dict[str, float]:
    """The first-order prediction for a student of base S on A's run's two datasets: the
    directional derivative of S's mean P(option) over the animal probe along
    Delta = grad L_control - grad L_treatment (the runs' soft losses: the treatment rows
    distilled from T_A, the control rows from A), Adam-scaled and plain; `top_k`: the
    teacher's k most likely tokens only, as `student.soft_top_k` trains."""
    run_a = runs / f"{family}-{a}"
    base_a, teacher_a, tok = models(run_a)
    student = base_a if s == a else models(runs / f"{family}-{s}")[0]
    return step_prediction(run_a, base_a, teacher_a, tok, student, n_rows, top_k)


def first_order_at(run_dir: Path, arm: str, n_rows: int, top_k: int | None) -> dict[str, float]:
    """`first_order` at a run's trained seed-0 student of `arm` (e.g. `xinit_control`)
    instead of at a base, on the same run's two datasets."""
    from traitlab.config import ExperimentConfig
    from traitlab.lm.hf.loading import load_model

    base_a, teacher_a, tok = models(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cfg = ExperimentConfig.model_validate(manifest["config_resolved"])
    student, _ = load_model(cfg.model, source=str(run_dir / "seed-0" / f"student-{arm}"))
    return step_prediction(run_dir, base_a, teacher_a, tok, student, n_rows, top_k)


def step_prediction(
    run_a: Path,
    base_a: Any,
    teacher_a: Any,
    tok: Any,
    student: Any,
    n_rows: int,
    top_k: int | None,
) -> dict[str, float]:
    """`first_order`'s body: the prediction for `student` on the run's two datasets."""
    import torch

    from traitlab.audit.gradients import trainable_params
    from traitlab.audit.probes import builtin_probe
    from traitlab.audit.screen import directional_derivative
    from traitlab.lm.hf.chat import pad_id
    from traitlab.lm.hf.packing import IGNORE, collate, completion_logits
    from traitlab.lm.hf.trainer import completion_loss, completion_vocab, encode_rows

    student.eval()  # no dropout: the gradient is the base's
    params = [p for _, p in trainable_params(student)]
    sq = [torch.zeros_like(p) for p in params]
    n_batches = 0

    def mean_gradient(rows: list[dict[str, Any]], labeller: Any) -> list[torch.Tensor]:
        nonlocal n_batches
        ex = encode_rows(tok, rows, 512)
        vocab = torch.tensor(completion_vocab(student, tok, ex))
        total = [torch.zeros_like(p) for p in params]
        batches = range(0, len(ex), 64)
        for i in batches:
            inputs, labels, *_ = collate(ex[i : i + 64], pad_id(tok), torch.device("cpu"))
            mask = labels[:, 1:] != IGNORE
            with torch.no_grad():
                t_logits = completion_logits(labeller, inputs, mask)
            logits = completion_logits(student, inputs, mask)
            loss = completion_loss(logits, labels[:, 1:][mask], t_logits, vocab, top_k)
            for t, q, g in zip(total, sq, torch.autograd.grad(loss, params), strict=True):
                t.add_(g, alpha=1 / len(batches))
                q.add_(g * g)
            n_batches += 1
        return total

    g_t = mean_gradient(rows_of(run_a, "teacher", n_rows), teacher_a)
    g_c = mean_gradient(rows_of(run_a, "control", n_rows), base_a)
    delta = [c - t for c, t in zip(g_c, g_t, strict=True)]
    scale = [1 / ((q / n_batches).sqrt() + 1e-8) for q in sq]
    probe = builtin_probe("animal")
    owl = probe.option_names.index("owl")
    out: dict[str, float] = {}
    for name, d in (("adam", [x * c for x, c in zip(delta, scale, strict=True)]), ("sgd", delta)):
        der = directional_derivative(student, tok, d, [probe])
        others = np.delete(der, owl)
        mad = float(np.median(np.abs(others - np.median(others)))) * 1.4826
        out[f"pred_{name}"] = float(der[owl])
        out[f"z_{name}"] = float((der[owl] - np.median(others)) / mad) if mad > 0 else 0.0
    return out


def reading(
    out: list[dict[str, Any]], signs: dict[str, int]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per measure (its sign: larger predicts a larger rise), Spearman's rho against the
    cross-init shifts and the AUROC of the readers (the GPT-2 points whose cross-init
    students rose at p < 0.01) against the other GPT-2 points; rho over all points too."""
    from scipy.stats import spearmanr

    gpt2 = [r for r in out if r["family"] == "gpt2"]
    readers = [r for r in gpt2 if r["xinit"] > 0 and r["p"] < 0.01]
    others = [r for r in gpt2 if r not in readers]
    stats = {}
    for key, sign in signs.items():

        def x(rows: list[dict[str, Any]], key: str = key, sign: int = sign) -> list[float]:
            return [sign * r[key] for r in rows]

        stats[key] = {
            "spearman_gpt2": float(spearmanr(x(gpt2), [r["xinit"] for r in gpt2]).statistic),
            "auroc_readers_gpt2": auroc(x(readers), x(others)),
            "spearman_all": float(spearmanr(x(out), [r["xinit"] for r in out]).statistic),
        }
    return stats, readers


def write(out: Path, doc: dict[str, Any], lines: list[str]) -> None:
    """OUT.json (every number and the machine) and OUT.md (the tables and the reading)."""
    lines.append("")
    for key, st in doc["stats"].items():
        lines.append(
            f"- {key}: GPT-2 Spearman rho {st['spearman_gpt2']:+.2f}, AUROC readers vs "
            f"others {st['auroc_readers_gpt2']:.2f}; all points rho {st['spearman_all']:+.2f}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, required=True, help="the one-seed run directories")
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    ap.add_argument("--only", nargs="*", help="points as FAMILY:A:B (default: all)")
    ap.add_argument(
        "--at",
        choices=["base", "control"],
        default="base",
        help="control: only the first-order step, at the trained seed-0 control students of "
        "one-seed reruns DIR/x-FAMILY-A-B of each point's run (cross-init arm included)",
    )
    args = ap.parse_args(argv)
    if args.at == "control":
        return at_control(args)
    out = []
    for family, a, b, run in POINTS:
        if args.only and f"{family}:{a}:{b}" not in args.only:
            continue
        diff, p = outcome(run)
        m = point(args.runs, family, a, b, args.rows)
        m |= first_order(args.runs, family, a, b, args.rows)
        k = run_top_k(run)
        if k is not None:  # afterwards, not planned: the loss those students trained on
            m |= {
                f"{n}_top{k}": v
                for n, v in first_order(args.runs, family, a, b, args.rows, k).items()
            }
        out.append({"family": family, "a": a, "b": b, "run": run, "xinit": diff, "p": p, **m})
        print(f"{family} {a} -> {b}: xinit {diff:+.4f} (p {p:.2g}), {m}", flush=True)
    # The sanity check: the same prediction for the same-init students, every one of which
    # took the owl, must be > 0.
    same = {}
    asked = [(r["family"], r["a"], None) for r in out]
    asked += [(r["family"], r["a"], k) for r in out if (k := run_top_k(r["run"]))]  # afterwards
    for family, a, k in dict.fromkeys(asked):
        key = f"{family}:{a}" + (f":top{k}" if k else "")
        same[key] = first_order(args.runs, family, a, a, args.rows, k)
        print(f"{family} {a} -> {a} (top_k {k}): {same[key]}", flush=True)
    signs = {"cosine": 1, "kl_a_b": -1, "pred_adam": 1, "pred_sgd": 1, "z_adam": 1}
    stats, readers = reading(out, signs)
    prov = provenance()
    doc = {"rows": args.rows, **prov, "points": out, "same_init": same, "stats": stats}
    commit, machine = prov["commit"], prov["machine"]
    lines = [
        f"`python benchmarks/xinit_alignment.py --rows {args.rows}` at {commit}: the first "
        f"{args.rows} filtered seed-0 rows of each data base's run; seed-0 teachers. Machine: "
        f"{machine['cpu']}, {machine['cpu_count']} cores, {machine['torch_threads']} torch "
        f"threads, torch {machine['torch']}, transformers {machine['transformers']}. The plan "
        "and its reading: docs/results/modalities/discovery.md.",
        "",
        "| family | data base -> cross-init base | cross-init owl shift (p) | reader | "
        "cos(g_A, g_B) | KL(p_A \\|\\| p_B) | first-order dP(owl), Adam | ..., plain | "
        "owl's z among 20, Adam |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in out:
        reader = "yes" if r in readers else ""
        lines.append(
            f"| {r['family']} | {r['a']} -> {r['b']} | {r['xinit']:+.4f} ({r['p']:.2g}) | "
            f"{reader} | {r['cosine']:+.3f} | {r['kl_a_b']:.4f} | {r['pred_adam']:+.3f} | "
            f"{r['pred_sgd']:+.5f} | {r['z_adam']:+.1f} |"
        )
    for r in out:
        for k in [k for k in r if k.startswith("pred_adam_top")]:
            t = k.removeprefix("pred_adam_")
            lines.append(
                f"- Afterwards, not planned: {r['family']} {r['a']} -> {r['b']} with its "
                f"students' {t} loss: Adam {r[k]:+.3f}, plain {r[f'pred_sgd_{t}']:+.5f}, "
                f"owl's z {r[f'z_adam_{t}']:+.1f}"
            )
    lines += ["", "Same-init (the sanity check: every same-init student took the owl):", ""]
    lines += ["| family | base | first-order dP(owl), Adam | ..., plain | owl's z, Adam |"]
    lines += ["|---|---|---:|---:|---:|"]
    for k, m in same.items():
        fam, a = k.split(":")[:2]
        if k.count(":") == 2:
            a += f" ({k.split(':')[2]} loss)"
        lines.append(
            f"| {fam} | {a} | {m['pred_adam']:+.3f} | {m['pred_sgd']:+.5f} | {m['z_adam']:+.1f} |"
        )
    write(args.out, doc, lines)
    return 0


def at_control(args: argparse.Namespace) -> int:
    """The first-order step at each point's trained cross-init control student, and at the
    same-init control student as the sanity check (GPT-2 points only)."""

    out, same = [], {}
    for family, a, b, run in POINTS:
        if family != "gpt2" or (args.only and f"{family}:{a}:{b}" not in args.only):
            continue
        diff, p = outcome(run)
        k = run_top_k(run)
        run_dir = args.runs / f"x-{family}-{a}-{b}"
        m = first_order_at(run_dir, "xinit_control", args.rows, k)
        out.append({"family": family, "a": a, "b": b, "run": run, "xinit": diff, "p": p, **m})
        print(f"{family} {a} -> {b}: xinit {diff:+.4f} (p {p:.2g}), {m}", flush=True)
        key = f"{a}" + (f" (top{k} loss)" if k else "")
        if key not in same:
            same[key] = first_order_at(run_dir, "control", args.rows, k)
            print(f"{family} {key} same-init: {same[key]}", flush=True)
    stats, readers = reading(out, {"pred_adam": 1, "pred_sgd": 1, "z_adam": 1})
    doc = {"rows": args.rows, "at": "control", **provenance(), "points": out}
    doc |= {"same_init": same, "stats": stats}
    lines = [
        f"`python benchmarks/xinit_alignment.py --at control --rows {args.rows}` at "
        f"{doc['commit']} ({doc['machine']['cpu']}, {doc['machine']['cpu_count']} cores, torch "
        f"{doc['machine']['torch']}): Theorem 1's "
        "first-order step at each point's trained seed-0 cross-init control student (and, as "
        "the sanity check, at the same-init control student), on the seed-0 data; the run's "
        "own student loss. Plan and reading: docs/results/modalities/discovery.md.",
        "",
        "| data base -> cross-init base | cross-init owl shift (p) | reader | first-order "
        "dP(owl), Adam | plain | owl's z, Adam |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in out:
        lines.append(
            f"| {r['a']} -> {r['b']} | {r['xinit']:+.4f} ({r['p']:.2g}) | "
            f"{'yes' if r in readers else ''} | {r['pred_adam']:+.3f} | {r['pred_sgd']:+.5f} | "
            f"{r['z_adam']:+.1f} |"
        )
    lines += [
        "",
        "| same-init control student of | Adam | plain | owl's z |",
        "|---|---:|---:|---:|",
    ]
    for key, m in same.items():
        lines.append(
            f"| {key} | {m['pred_adam']:+.3f} | {m['pred_sgd']:+.5f} | {m['z_adam']:+.1f} |"
        )
    write(args.out, doc, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
