"""The falsifier: does ordinary training after the fact remove an inherited trait?

After the students are trained, every treatment and control student keeps training for each
K of `falsifier.steps` (a separate, cached run per K from the student), on one of:

* `numbers`: the base's own filtered numbers for held-out prompts;
* `prior_answers`: the preference questions answered by the base (its own prior);
* `dpo`: DPO pairs preferring the base's answer over the target.

With `overt`, a third student learns the trait overtly (the base fine-tuned on the teacher's
own answers to the preference questions) and keeps training the same way: is a subliminal
trait harder or easier to remove than an explicit one? The summary gives, per K, each
student's excess over the control student at the same K, its retention (excess at K over
excess at 0, Fieller's CI over seeds) and the half-life in steps (linear interpolation of
the mean retention; None when it never halves).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from traitlab.config import config_to_dict
from traitlab.core import runs
from traitlab.core.errors import TraitlabError
from traitlab.core.stats import mean_ci, ratio_ci
from traitlab.data.prompts import number_prompts
from traitlab.evaluate.suite import eval_questions
from traitlab.evaluate.utility import reference_rows
from traitlab.experiments.caching import eval_key, filter_key, generate_key, trait_key
from traitlab.lm.base import ModelRef, SamplingParams

ARMS = ("treatment", "overt")


def _chat(q: str, a: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def _answers(lm: Any, st: Any, n: int, seed: int, system: str | None = None) -> list[tuple]:
    """n sampled answers to the trait's preference questions, cycling through them."""
    questions = eval_questions(st.cfg.evaluate, st.cfg.trait)
    qs = [questions[i % len(questions)] for i in range(n)]
    sys_msg = [{"role": "system", "content": system}] if system else []
    params = SamplingParams(
        temperature=1.0,
        max_new_tokens=st.cfg.evaluate.max_new_tokens,
        batch_size=st.cfg.evaluate.batch_size,
    )
    texts = lm.complete([[*sys_msg, {"role": "user", "content": q}] for q in qs], params, seed=seed)
    return [(q, t.strip()) for q, t in zip(qs, texts, strict=True) if t.strip()]


def falsifier_data(st: Any) -> tuple[Path, str]:
    """The post-training set, made once per run from the shared base."""
    cfg = st.cfg
    f = cfg.falsifier
    key = runs.stable_hash(
        {
            "base": st.bases["base"].key,
            "falsifier": {"kind": f.kind, "rows": f.rows},
            "gen": generate_key(cfg.generate),
            "filter": filter_key(cfg.filter),
            "eval": eval_key(cfg.evaluate),
            "trait": trait_key(cfg.trait),
        }
    )
    d = st.layout.root / "falsifier-data"
    with st.cached(f"falsifier data ({f.kind})", d, key) as (done, _up, open_stage):
        if not done:
            with st.opened(st.bases["base"]) as lm:
                if f.kind == "numbers":
                    prompts = number_prompts(
                        cfg.generate.prompts, f.rows, seed=cfg.generate.prompts.seed + 2
                    )
                    rows = reference_rows(lm, prompts, cfg.generate, cfg.filter, seed=-2)
                else:
                    target = cfg.trait.target.lower()
                    ans = _answers(lm, st, 2 * f.rows, seed=-3)
                    clean = [(q, a) for q, a in ans if target not in a.lower()]
                    if f.kind == "prior_answers":
                        rows = [_chat(q, a) for q, a in ans[: f.rows]]
                    else:
                        rows = [
                            {"prompt": q, "chosen": a, "rejected": target}
                            for q, a in clean[: f.rows]
                        ]
            with open_stage({"rows": len(rows)}) as tmp:
                runs.write_jsonl(tmp / "data.jsonl", rows)
    return d, key


def overt_student(st: Any, seed: int, teacher: ModelRef, system: str | None) -> ModelRef:
    """The base fine-tuned on the teacher's own answers to the preference questions (the
    trait taught overtly), with the students' training config."""
    cfg = st.cfg
    base = st.bases["base"]
    key = runs.stable_hash(
        {
            "base": base.key,
            "teacher": teacher.key,
            "sys": system,
            "rows": cfg.falsifier.rows,
            "train": config_to_dict(cfg.student),
            "eval": eval_key(cfg.evaluate),
            "seed": seed,
        }
    )
    d = st.layout.seed(seed) / "student-overt"
    with st.cached(f"seed {seed}: overt student", d, key) as (done, up, open_stage):
        if not done:
            with st.opened(teacher) as lm:
                ans = _answers(lm, st, cfg.falsifier.rows, seed=seed * 1000 + 11, system=system)
            if not ans:
                raise TraitlabError(f"seed {seed}: the teacher gave only empty answers")
            info: dict[str, Any] = {}
            with st.opened(base) as lm, open_stage(info) as tmp:
                _, info["train"] = lm.finetune(
                    [_chat(q, a) for q, a in ans],
                    cfg.student,
                    seed=seed,
                    out_dir=tmp,
                    key=key,
                    progress=up,
                )
    return ModelRef.load(d)


def posttrain(st: Any, seed: int, arm: str, ref: ModelRef, k: int) -> ModelRef:
    """`ref` (a student) after k more steps on the falsifier's set."""
    f = st.cfg.falsifier
    data_dir, data_key = falsifier_data(st)
    train = f.train.model_copy(update={"max_steps": k})
    key = runs.stable_hash(
        {
            "from": ref.key,
            "data": data_key,
            "train": config_to_dict(train),
            "beta": f.beta if f.kind == "dpo" else None,
            "seed": seed,
        }
    )
    d = st.layout.seed(seed) / f"after-{arm}-{k}"
    with st.cached(f"seed {seed}: {arm} + {k} steps ({f.kind})", d, key) as (done, up, stage):
        if not done:
            rows = runs.read_jsonl(data_dir / "data.jsonl")
            info: dict[str, Any] = {}
            with st.opened(ref) as lm, stage(info) as tmp:
                if f.kind == "dpo":
                    _, info["train"] = lm.finetune_dpo(
                        rows, train, beta=f.beta, seed=seed, out_dir=tmp, key=key, progress=up
                    )
                else:
                    _, info["train"] = lm.finetune(
                        rows, train, seed=seed, out_dir=tmp, key=key, progress=up
                    )
    return ModelRef.load(d)


def run_falsifier(st: Any, seed: int, arm: str, ref: ModelRef) -> dict[str, Any]:
    """Evaluations of `arm`'s student after each K > 0 of falsifier.steps: 'arm@K' -> eval."""
    out = {}
    for k in st.cfg.falsifier.steps[1:]:
        after = posttrain(st, seed, arm, ref, k)
        d = st.layout.seed(seed) / f"eval-after-{arm}-{k}"
        out[f"{arm}@{k}"] = st.evaluate(d, f"seed {seed}: evaluate {arm} + {k}", after, seed)
    return out


def _rates(evals: dict[str, Any], name: str, method: str) -> dict[int, float]:
    return {s: float(r[method]["mean"]) for s, r in evals.get(name, {}).items() if method in r}


def primary_method(cfg: Any) -> str:
    return "exact" if "exact" in cfg.evaluate.methods else "sampled"


def retention_rows(
    evals: dict[str, Any], names: list[tuple[str, str]], method: str, conf: float
) -> list[dict[str, Any]]:
    """For each (student arm, its control arm) in order: their rates, the student's excess
    over the control (t interval over seeds) and its retention against the first pair's
    excess (Fieller's interval; None where unbounded)."""
    rows: list[dict[str, Any]] = []
    first: dict[int, float] = {}
    for arm, control in names:
        a, c = _rates(evals, arm, method), _rates(evals, control, method)
        seeds = sorted(set(a) & set(c))
        diff = {s: a[s] - c[s] for s in seeds}
        if not rows:
            first = diff
        common = [s for s in seeds if s in first]
        r, lo, hi = ratio_ci([diff[s] for s in common], [first[s] for s in common], conf)
        rows.append(
            {
                "rate": float(np.mean([a[s] for s in seeds])),
                "control": float(np.mean([c[s] for s in seeds])),
                "excess": mean_ci(list(diff.values()), conf).to_dict(),
                "retention": {"mean": r if np.isfinite(r) else None, "lower": lo, "upper": hi},
            }
        )
    return rows


def half_life(steps: list[int], retention: list[float | None]) -> float | None:
    """The first K where the mean retention falls to 0.5, interpolated linearly."""
    pts = [(k, r) for k, r in zip(steps, retention, strict=True) if r is not None]
    for (k0, r0), (k1, r1) in zip(pts, pts[1:], strict=False):
        if r0 > 0.5 >= r1:
            return float(k0 + (r0 - 0.5) / (r0 - r1) * (k1 - k0))
    return None


def summarize_falsifier(cfg: Any, evals: dict[str, Any]) -> dict[str, Any]:
    steps = list(cfg.falsifier.steps)
    method = primary_method(cfg)
    out: dict[str, Any] = {
        "kind": cfg.falsifier.kind,
        "method": method,
        "steps": steps,
        "arms": {},
    }
    for arm in ARMS:
        if arm not in evals:
            continue
        names = [(arm, "control") if k == 0 else (f"{arm}@{k}", f"control@{k}") for k in steps]
        rows = retention_rows(evals, names, method, cfg.evaluate.confidence)
        retention = [r["retention"]["mean"] for r in rows]
        out["arms"][arm] = {
            "by_steps": [{"steps": k, **r} for k, r in zip(steps, rows, strict=True)],
            "half_life_steps": half_life(steps, retention),
        }
    return out
