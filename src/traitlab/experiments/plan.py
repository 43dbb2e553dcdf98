"""What an experiment will ask of each backend, before anything runs (`traitlab run --dry-run`).

Counts requests (generation, evaluation, fine-tuning jobs) and estimates tokens (4 characters
a token; completions at their `max_new_tokens` bound) and, where the model config has prices,
the cost. Nothing is contacted and nothing is written.
"""

from __future__ import annotations

from typing import Any

from traitlab.config import ExperimentConfig
from traitlab.data.modalities import modality_prompts
from traitlab.evaluate.suite import eval_questions
from traitlab.experiments.arms import STUDENTS
from traitlab.traits.teacher import teacher_data


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def plan(cfg: ExperimentConfig) -> dict[str, Any]:
    """Per backend: requests, input/output/training tokens and cost (None without prices)."""
    prompts = modality_prompts(cfg.generate)[0]
    prompt_tokens = sum(_tokens(p) for p in prompts)
    questions = eval_questions(cfg.evaluate, cfg.trait)
    q_tokens = sum(_tokens(q) for q in questions)
    seeds = len(cfg.seeds)
    per: dict[str, dict[str, Any]] = {}

    def add(
        spec: Any, kind: str, requests: int, inp: int, out: int, train: int = 0, field: str = ""
    ) -> None:
        if not field:
            field = "cross_init" if spec is cfg.cross_init and spec is not cfg.model else "model"
        name = f"{field} ({spec.backend} {getattr(spec, 'name', '')})"
        row = per.setdefault(name, {"requests": {}, "input": 0, "output": 0, "training": 0})
        row["requests"][kind] = row["requests"].get(kind, 0) + requests
        row["input"] += inp
        row["output"] += out
        row["training"] += train
        row["spec"] = spec

    def evaluations(spec: Any, models: int) -> None:
        e = cfg.evaluate
        if "exact" in e.methods:
            add(spec, "evaluation", models * len(questions), models * q_tokens, 0)
        if "judged" in e.methods:  # sampled answers, then two judges per answer
            n = models * len(questions) * e.samples_per_question
            add(spec, "evaluation", n, n * q_tokens // max(1, len(questions)), n * e.max_new_tokens)
        # Two judge calls per judged answer: the prompt's template, the question, the answer.
        per_call = 300 + q_tokens // max(1, len(questions)) + e.max_new_tokens
        if "judged" in e.methods and e.judge is not None and e.judge.kind == "model":
            n = 2 * models * len(questions) * e.samples_per_question
            add(e.judge.model, "judge", n, n * per_call, n * 6, field="evaluate.judge")
        if "judged" in e.methods and e.judge is not None and e.judge.check is not None:
            n = 2 * models * min(e.judge.check_answers, len(questions) * e.samples_per_question)
            add(e.judge.check, "judge", n, n * per_call, n * 6, field="evaluate.judge.check")
        if "sampled" in e.methods:
            n = e.samples_per_question
            add(
                spec,
                "evaluation",
                models * len(questions) * n,
                models * q_tokens * n,
                models * len(questions) * n * e.max_new_tokens,
            )

    base = cfg.model
    finetuned = cfg.teacher.kind == "finetuned"
    if finetuned:
        rows = teacher_data(cfg.teacher, cfg.trait)
        tokens = sum(_tokens(m["content"]) for r in rows for m in r["messages"])
        add(base, "fine-tuning jobs", seeds, 0, 0, int(tokens * max(1.0, cfg.teacher.train.epochs)))
    gen_out = cfg.generate.n_prompts * cfg.generate.max_new_tokens
    add(
        base,
        "generation",
        2 * seeds * cfg.generate.n_prompts,
        2 * seeds * prompt_tokens,
        2 * seeds * gen_out,
    )
    kept = min(cfg.generate.n_prompts, cfg.filter.max_rows or cfg.generate.n_prompts)
    row_tokens = int(
        kept * (prompt_tokens / max(1, len(prompts)) + cfg.generate.max_new_tokens / 2)
    )
    if cfg.filter.judge is not None:  # at most every completion, teacher's and control's
        n = 2 * seeds * cfg.generate.n_prompts
        per_call = 300 + prompt_tokens // max(1, len(prompts)) + cfg.generate.max_new_tokens
        add(cfg.filter.judge.model, "filter judge", n, n * per_call, n * 6, field="filter.judge")
    evaluations(base, 1 + seeds)  # the base, and each seed's teacher
    for arm in STUDENTS:
        spec = base if arm.base == "base" else cfg.cross_init
        if spec is None:
            continue
        add(spec, "fine-tuning jobs", seeds, 0, 0, int(row_tokens * cfg.student.epochs * seeds))
        evaluations(spec, seeds)
    if cfg.cross_init is not None:
        evaluations(cfg.cross_init, 1)
    out = {}
    for name, row in per.items():
        spec = row.pop("spec")
        prices = getattr(spec, "price_per_million", None) or {}
        cost = None
        if prices:
            cost = sum(row[k] * prices.get(k, 0.0) / 1e6 for k in ("input", "output", "training"))
        out[name] = {**row, "api": spec.backend in ("openai",), "cost_usd": cost}
    return out


def plan_lines(p: dict[str, Any]) -> list[str]:
    lines = []
    for name, row in p.items():
        where = "API" if row["api"] else "local"
        reqs = ", ".join(f"{n:,} {k}" for k, n in row["requests"].items())
        cost = f"; about ${row['cost_usd']:.2f}" if row["cost_usd"] is not None else ""
        lines.append(
            f"{name} ({where}): {reqs} requests; ~{row['input']:,} input, ~{row['output']:,} "
            f"output and ~{row['training']:,} training tokens{cost}"
        )
    return lines
