"""Benchmark: exact (teacher-forced) vs sampled trait evaluation, time and interval width.

For each condition (the model as is, and behind the paper's owl system prompt, which the toy
model was pretrained to follow) it runs `evaluate_model` with both methods and reports the
seconds per model evaluation, the mean and the 95% t-interval half-width over questions.

Equal-width cost: the sampled interval's width shrinks roughly as 1/sqrt(samples), so reaching
the exact method's half-width needs about n x (w_sampled / w_exact)^2 samples per question
and costs about sampled_seconds x (w_sampled / w_exact)^2; divided by the exact method's
seconds this is the cost ratio at equal width. That scaling ignores a floor: the per-question
rates vary between questions, so however many samples are drawn the sampled half-width
cannot shrink below t * sqrt(between-question variance / n_questions). We estimate that
floor (subtracting the binomial noise p(1-p)/(n-1) from the variance of the rates) and flag
when equal width is out of reach. (The two methods also measure different things: "starts
with the option" vs "mentions it anywhere".)

    .venv/bin/python benchmarks/bench_eval.py --quick     # < 1 min
    .venv/bin/python benchmarks/bench_eval.py             # 50 questions x 100 samples

Writes benchmarks/results/eval.json and eval.md, and the table into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
from typing import Any

import numpy as np
import torch
from bench_generation import load_bench_model, machine_info, machine_line, write_results
from scipy import stats as sps


def equal_width(res: dict[str, Any], confidence: float) -> dict[str, Any]:
    e, s = res["exact"], res["sampled"]
    w_e = (e["ci"]["upper"] - e["ci"]["lower"]) / 2
    w_s = (s["ci"]["upper"] - s["ci"]["lower"]) / 2
    n = s["n_per_question"]
    p = np.asarray(s["per_question"])
    q = len(p)
    var = float(p.var(ddof=1)) if q > 1 else 0.0
    noise = float(np.mean(p * (1 - p))) / max(n - 1, 1)
    between = max(0.0, var - noise)
    tq = float(sps.t.ppf(0.5 + confidence / 2, df=max(q - 1, 1)))
    floor = tq * math.sqrt(between / q)
    out: dict[str, Any] = {
        "exact_half_width": w_e,
        "sampled_half_width": w_s,
        "samples_per_question": n,
        "sampled_noise_share": (min(1.0, noise / var) if var > 0 else None),
        "sampled_half_width_floor": floor,
        "equal_width_attainable": bool(floor < w_e),
    }
    if w_e > 0 and w_s > 0:
        factor = (w_s / w_e) ** 2
        out["width_ratio_squared"] = factor
        out["samples_needed_per_question"] = n * factor
        out["sampled_seconds_at_equal_width"] = s["seconds"] * factor
        out["cost_ratio_at_equal_width"] = s["seconds"] * factor / e["seconds"]
    else:
        out["width_ratio_squared"] = None
        out["samples_needed_per_question"] = None
        out["sampled_seconds_at_equal_width"] = None
        out["cost_ratio_at_equal_width"] = None
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from traitlab.config import EvalConfig, TraitConfig
    from traitlab.evaluate.suite import evaluate_model
    from traitlab.lm.hf.backend import HFLM
    from traitlab.traits.preference import preference_system_prompt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 questions x 20 samples, < 1 min")
    ap.add_argument("--model", choices=["auto", "toy", "random"], default="auto")
    ap.add_argument("--source", default=None, help="a model directory to load instead")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--questions", type=int, default=None)
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n_q = args.questions or (10 if args.quick else 50)
    n_s = args.samples or (20 if args.quick else 100)
    cfg = EvalConfig(
        methods=["exact", "sampled"],
        samples_per_question=n_s,
        n_questions=n_q,
        batch_size=args.batch_size,
    )
    trait = TraitConfig(category="animal", target="owl")

    info = machine_info()
    model, tok, desc = load_bench_model(args.model, args.device, args.source)
    # Warm-up (first-call overheads) on one question.
    lm = HFLM.wrap(model, tok)
    evaluate_model(lm, cfg.model_copy(update={"n_questions": 1}), trait, seed=0)

    rows = []
    conditions = {"as is": None, "owl system prompt": preference_system_prompt("owl", "animal")}
    for name, sp in conditions.items():
        res = evaluate_model(lm, cfg, trait, seed=0, system_prompt=sp).to_json()
        row = {
            "condition": name,
            "exact": {k: res["exact"][k] for k in ("mean", "ci", "seconds")},
            "sampled": {k: res["sampled"][k] for k in ("mean", "ci", "pooled", "seconds")},
            "agreement": res["agreement"],
            "equal_width": equal_width(res, cfg.confidence),
            "top_options_exact": sorted(res["exact"]["options"].items(), key=lambda kv: -kv[1])[:5],
        }
        rows.append(row)
        ew = row["equal_width"]
        print(
            f"{name}: exact {res['exact']['mean']:.4f} +- {ew['exact_half_width']:.4f} "
            f"in {res['exact']['seconds']:.2f} s | sampled {res['sampled']['mean']:.4f} "
            f"+- {ew['sampled_half_width']:.4f} in {res['sampled']['seconds']:.2f} s | "
            f"cost ratio at equal width {ew['cost_ratio_at_equal_width']}",
            flush=True,
        )

    when = dt.datetime.now().isoformat(timespec="seconds")
    payload = {
        "benchmark": "eval",
        "when": when,
        "quick": args.quick,
        "machine": info,
        "device": args.device,
        "model": desc,
        "questions": n_q,
        "samples_per_question": n_s,
        "batch_size": args.batch_size,
        "rows": rows,
    }

    def f(x: Any, spec: str = ".4f") -> str:
        return "n/a" if x is None else format(x, spec)

    lines = [
        f"### eval, {when}{' (--quick)' if args.quick else ''}",
        "",
        f"Machine: {machine_line(info, args.device)}. Device: {args.device}.",
        f"Model: {desc}. {n_q} questions, {n_s} samples per question (temperature 1, "
        f"max 8 new tokens), batch {args.batch_size}; half-widths of 95% t-intervals over "
        "questions.",
        "",
        "| condition | exact mean ± hw | exact s | sampled mean ± hw | sampled s | "
        "s/e time | samples/q for equal width | cost ratio at equal width | "
        "equal width reachable |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ew, e, s = r["equal_width"], r["exact"], r["sampled"]
        lines.append(
            f"| {r['condition']} | {e['mean']:.4f} ± {ew['exact_half_width']:.4f} | "
            f"{e['seconds']:.2f} | {s['mean']:.4f} ± {ew['sampled_half_width']:.4f} | "
            f"{s['seconds']:.2f} | {f(r['agreement']['cost_ratio'], '.1f')} | "
            f"{f(ew['samples_needed_per_question'], '.0f')} | "
            f"{f(ew['cost_ratio_at_equal_width'], '.0f')} | "
            f"{'yes' if ew['equal_width_attainable'] else 'no (between-question floor)'} |"
        )
    table = "\n".join(lines)
    if not args.no_write:
        write_results("eval", payload, table)
    print(table)
    return payload


if __name__ == "__main__":
    main()
