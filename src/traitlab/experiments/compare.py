"""Compare arms across seeds: rates with intervals, paired tests, the verdict.

The headline comparison is treatment student vs control student (trained on numbers the base
itself wrote for the same prompts), paired by seed: fine-tuning on *any* self-generated numbers
moves a model, so comparing with the untouched base alone overstates the effect.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from traitlab.config import ExperimentConfig
from traitlab.core.stats import mean_ci, paired_test, wilcoxon_p
from traitlab.experiments.arms import ARM_LABELS, ARMS, COMPARISONS
from traitlab.judges.agreement import agreement_stats

SCHEMA_VERSION = 1
ALPHA = 0.01


def _arm_summary(
    per_seed: dict[int, dict[str, Any]], method: str, conf: float
) -> dict[str, Any] | None:
    # Sorted: workers finish seeds in any order, and float sums depend on the order.
    vals = {s: per_seed[s][method] for s in sorted(per_seed) if method in per_seed[s]}
    if not vals:
        return None
    means = [float(v["mean"]) for v in vals.values()]
    if len(means) >= 2:
        ci = mean_ci(means, conf).to_dict()
        ci["method"] = f"t over {len(means)} seeds"
    else:
        ci = dict(next(iter(vals.values()))["ci"])
        ci["method"] = f"{ci.get('method', 't')} over questions (1 seed)"
    return {
        "mean": float(np.mean(means)),
        "ci": ci,
        "per_seed": {str(s): float(v["mean"]) for s, v in vals.items()},
        "per_seed_ci": {str(s): v["ci"] for s, v in vals.items()},
    }


def _compare(
    evals: dict[str, dict[int, dict[str, Any]]], a: str, b: str, method: str, conf: float
) -> dict[str, Any] | None:
    if a not in evals or b not in evals:
        return None
    seeds = sorted(set(evals[a]) & set(evals[b]))
    seeds = [s for s in seeds if method in evals[a][s] and method in evals[b][s]]
    if not seeds:
        return None
    ta = [float(evals[a][s][method]["mean"]) for s in seeds]
    tb = [float(evals[b][s][method]["mean"]) for s in seeds]
    test = paired_test(ta, tb, conf).to_dict()
    # Question level: average each question over seeds, then a signed-rank test over questions.
    qa = np.mean([evals[a][s][method]["per_question"] for s in seeds], axis=0)
    qb = np.mean([evals[b][s][method]["per_question"] for s in seeds], axis=0)
    test["questions"] = {
        "n": int(len(qa)),
        "n_positive": int((qa > qb).sum()),
        "wilcoxon_p": wilcoxon_p(qa, qb),
        "t_p": paired_test(qa, qb, conf).p_value if len(qa) >= 2 else None,
    }
    test["seeds"] = seeds
    return test


def option_shifts(
    evals: dict[str, dict[int, dict[str, Any]]], a: str, b: str, target: str
) -> dict[str, Any] | None:
    """How every probed option moved between arms a and b (exact rates, paired by seed).

    A student can rise on its target and just as much on options no teacher loved: fine-tuning
    on one model's numbers instead of another's reshuffles the whole preference distribution.
    The target's rank among the shifts and its z against the other options' shifts say
    whether the rise is about the target; `top_others` names what else moved most.
    """
    if a not in evals or b not in evals:
        return None
    seeds = sorted(set(evals[a]) & set(evals[b]))
    per_seed: dict[int, dict[str, float]] = {}
    for s in seeds:
        oa = (evals[a][s].get("exact") or {}).get("options")
        ob = (evals[b][s].get("exact") or {}).get("options")
        if oa and ob and target in oa and target in ob:
            per_seed[s] = {k: float(oa[k] - ob[k]) for k in oa if k in ob}
    if not per_seed:
        return None
    keys = list(next(iter(per_seed.values())))
    mean = {k: float(np.mean([p[k] for p in per_seed.values()])) for k in keys}
    out = describe_shifts(mean, target)
    out["rank_per_seed"] = {str(s): describe_shifts(p, target)["rank"] for s, p in per_seed.items()}
    return out


def profile_fit(
    base: dict[str, float],
    teacher: dict[str, float],
    a: dict[str, float],
    b: dict[str, float],
    target: str,
) -> tuple[float, float] | None:
    """Over the options besides the target, x = log teacher - log base and y = log a - log b:
    their Pearson r and the slope of y on x (None with < 3 options or either flat)."""
    keys = [k for k in base if k != target and k in teacher and k in a and k in b]

    def log(d: dict[str, float]) -> np.ndarray:
        # Exact rates underflow to 0 on very sure models.
        return np.log(np.maximum([d[k] for k in keys], 1e-12))

    if len(keys) < 3:
        return None
    x, y = log(teacher) - log(base), log(a) - log(b)
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1]), float(np.cov(x, y)[0, 1] / x.var(ddof=1))


def teacher_profile(
    evals: dict[str, dict[int, dict[str, Any]]], a: str, b: str, target: str, conf: float = 0.95
) -> dict[str, Any] | None:
    """Did arm a, against arm b, move along the teacher's whole preference profile?

    Fine-tuning a teacher on one target moves every other option too, by amounts the shared
    initialisation sets. Per seed, over the options other than the target, x is the teacher's
    shift from the base (log P_teacher - log P_base) and y is a's shift from b (log P_a -
    log P_b): `r` is their Pearson correlation (does y have the teacher's shape?) and `slope`
    the regression of y on x (how far a moved along it, in units of the teacher's shift); a t
    over seeds tests each. Without the target, they say whether the data carried more of the
    teacher than the target, which a rank of the target's shift cannot see (an option the
    teacher also raised can rise further than the target).
    """
    if "teacher" not in evals or "base" not in evals or a not in evals or b not in evals:
        return None
    base = (next(iter(evals["base"].values())).get("exact") or {}).get("options")
    if not base or target not in base:
        return None

    def options(arm: str, s: int) -> dict[str, float] | None:
        return (evals[arm][s].get("exact") or {}).get("options")

    per_seed: dict[str, dict[int, float]] = {"r": {}, "slope": {}}
    for s in sorted(set(evals["teacher"]) & set(evals[a]) & set(evals[b])):
        ot, oa, ob = options("teacher", s), options(a, s), options(b, s)
        fit = profile_fit(base, ot, oa, ob, target) if ot and oa and ob else None
        if fit is not None:
            per_seed["r"][s], per_seed["slope"][s] = fit
    if not per_seed["r"]:
        return None
    out: dict[str, Any] = {"n_options": len(base) - 1}
    for name, vals in per_seed.items():
        # A one-sample t against 0: the paired test against zeros gives the mean, its
        # interval, p and the seeds above 0 in one place (p is NaN, then null, for 1 seed).
        v = list(vals.values())
        test = paired_test(v, [0.0] * len(v), conf)
        p = test.p_value
        out[name] = {
            "mean": test.diff.mean,
            "ci": test.diff.to_dict(),
            "p_value": p if np.isfinite(p) else None,
            "n_positive": test.n_positive,
            "per_seed": {str(s): x for s, x in vals.items()},
        }
    return out


def profile_contrast(profiles: dict[str, Any], conf: float = 0.95) -> dict[str, Any] | None:
    """Same-init minus cross-init r and slope, paired by seed: is the profile tied to the
    shared initialisation, or does any student read it off the data?"""
    same = profiles.get("treatment_vs_control") or {}
    cross = profiles.get("xinit_treatment_vs_xinit_control") or {}
    out: dict[str, Any] = {}
    for name in ("r", "slope"):
        a = (same.get(name) or {}).get("per_seed") or {}
        b = (cross.get(name) or {}).get("per_seed") or {}
        seeds = sorted(set(a) & set(b), key=int)
        if len(seeds) >= 2:
            out[name] = paired_test([a[s] for s in seeds], [b[s] for s in seeds], conf).to_dict()
    return out or None


def describe_shifts(shifts: dict[str, float], target: str) -> dict[str, Any]:
    """The target's rank (1: it rose more than every other option), its z against the other
    options' shifts (and their sd), and the three other options that rose most."""
    others = np.array([v for k, v in shifts.items() if k != target])
    sd = float(others.std(ddof=1)) if len(others) >= 2 else 0.0
    top = sorted(((k, v) for k, v in shifts.items() if k != target), key=lambda kv: -kv[1])
    return {
        "target": target,
        "n_options": len(shifts),
        "target_shift": shifts[target],
        "rank": 1 + int((others > shifts[target]).sum()),
        "z": (shifts[target] - float(others.mean())) / sd if sd > 0 else None,
        "others_sd": sd,  # how much the whole distribution moved: the drift the z is against
        "top_others": [[k, v] for k, v in top[:3]],
        "shifts": shifts,
    }


def _agreement(judged: list[dict[str, Any]]) -> dict[str, Any]:
    """The check judge against the counted judges, over every evaluated model."""
    pins = judged[0]["judges"]
    return {
        "first": pins["alignment"].get("model", pins["alignment"]["kind"]),
        "check": pins["check_alignment"].get("model"),
    } | agreement_stats(j["judge_agreement"] for j in judged)


def summarize(
    cfg: ExperimentConfig,
    evals: dict[str, dict[int, dict[str, Any]]],
    filters: dict[int, dict[str, Any]],
    stage_seconds: dict[str, float],
    total_seconds: float,
    base_seconds: float = 0.0,
    teachers: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The run's `summary.json` (schema documented in docs/summary-schema.md)."""
    conf = cfg.evaluate.confidence
    methods = list(cfg.evaluate.methods)
    arms: dict[str, Any] = {}
    cost_ratios: list[float] = []
    for arm in (a.name for a in ARMS):
        if arm not in evals:
            continue
        arms[arm] = {"label": ARM_LABELS[arm]}
        for m in methods:
            s = _arm_summary(evals[arm], m, conf)
            if s is not None:
                arms[arm][m] = s
        by_seed = [evals[arm][s] for s in sorted(evals[arm])]  # workers finish in any order
        exact = [r.get("exact", {}).get("options") for r in by_seed]
        exact = [e for e in exact if e]
        if exact:
            keys = exact[0].keys()
            arms[arm]["exact_options"] = {k: float(np.mean([e[k] for e in exact])) for k in keys}
        util = {
            s: evals[arm][s]["utility"] for s in sorted(evals[arm]) if "utility" in evals[arm][s]
        }
        if util:
            arms[arm]["utility"] = {
                k: float(np.mean([u[k] for u in util.values()]))
                for k in ("heldout_loss", "pass_rate")
            } | {"per_seed": {str(s): u for s, u in util.items()}}
        agree = [r["agreement"] for r in by_seed if "agreement" in r]
        if agree:
            # The cost ratio is a timing: it goes under "timing" so numbers stay reproducible.
            arms[arm]["agreement"] = [
                {k: v for k, v in a.items() if k != "cost_ratio"} for a in agree
            ]
            cost_ratios += [a["cost_ratio"] for a in agree if a.get("cost_ratio") is not None]
    comparisons: dict[str, Any] = {}
    for name, a, b, _ in COMPARISONS:
        per_method = {m: _compare(evals, a, b, m, conf) for m in methods}
        per_method = {m: v for m, v in per_method.items() if v is not None}
        if per_method:
            comparisons[name] = per_method
    target = cfg.trait.target.lower()
    shifts = {name: option_shifts(evals, a, b, target) for name, a, b, _ in COMPARISONS}
    shifts = {k: v for k, v in shifts.items() if v is not None}
    profile: dict[str, Any] = {
        name: p
        for name, a, b, _ in COMPARISONS
        if (p := teacher_profile(evals, a, b, target, conf)) is not None
    }
    if (contrast := profile_contrast(profile, conf)) is not None:
        profile["same_minus_cross_init"] = contrast
    checked = [
        r["judged"]
        for arm in evals.values()
        for r in arm.values()
        if (r.get("judged") or {}).get("judge_agreement")
    ]
    primary = "exact" if "exact" in methods else methods[0]
    verdict: dict[str, Any] = {"method": primary, "alpha": ALPHA}
    tc = comparisons.get("treatment_vs_control", {}).get(primary)
    if tc is not None:
        verdict["transfer"] = bool(tc["diff"]["mean"] > 0 and tc["p_value"] < ALPHA)
        verdict["diff"] = tc["diff"]["mean"]
        verdict["p_value"] = tc["p_value"]
    xc = comparisons.get("xinit_treatment_vs_xinit_control", {}).get(primary)
    if xc is not None:
        verdict["cross_init_diff"] = xc["diff"]["mean"]
        verdict["cross_init_p_value"] = xc["p_value"]
        verdict["cross_init_transfer"] = bool(xc["diff"]["mean"] > 0 and xc["p_value"] < ALPHA)
    return _finite(
        {
            "schema_version": SCHEMA_VERSION,
            "data_quality": data_quality(filters, teachers or {}, cfg.control.teacher),
            "name": cfg.name,
            "trait": cfg.trait.model_dump(),
            "teacher_kind": cfg.teacher.kind,
            "student": {"method": cfg.student.method, "loss": cfg.student.loss},
            "seeds": list(cfg.seeds),
            "methods": methods,
            "arms": arms,
            "comparisons": comparisons,
            "verdict": verdict,
            **({"option_shifts": shifts} if shifts else {}),
            **({"teacher_profile": profile} if profile else {}),
            **({"judge_agreement": _agreement(checked)} if checked else {}),
            "data": {str(s): f for s, f in filters.items()},
            "timing": {
                "total_seconds": round(total_seconds, 2),
                "base_models_seconds": round(base_seconds, 2),
                "stages": stage_seconds,
                "eval_cost_ratio_sampled_over_exact": (
                    float(np.mean(cost_ratios)) if cost_ratios else None
                ),
            },
        }
    )


# The recipe's needs: a teacher whose numbers pass the filter within this many points of the
# base's (else filtering keeps only its least-changed completions), and this share of the
# prompts left after paired filtering.
MAX_PASS_DROP = 0.10
MIN_KEPT_SHARE = 0.5


def kept_first_check(teacher: dict[str, Any]) -> bool:
    """Did early stopping end at the teacher's first failed check and keep it? Its log
    (NumberGuard.log) then keeps the step it stopped at: no earlier weights had passed."""
    return (
        teacher.get("stopped_at") is not None and teacher.get("kept_step") == teacher["stopped_at"]
    )


def _teacher_hint(teachers: dict[int, dict[str, Any]]) -> str:
    """What to change when the teachers' completions fail the filter: it depends on whether
    early stopping ran, and on whether it had anything earlier than a failed check to keep."""
    guarded = [t for t in teachers.values() if "checks" in t]
    if not guarded:
        return "set teacher.keep_numbers, or lower teacher.train.lr or max_steps"
    first = [t for t in guarded if kept_first_check(t)]
    if first:
        return (
            f"{len(first)} of {len(teachers)} teachers failed even their first check and kept it: "
            "set or raise teacher.keep_numbers.retries to start them again at half the lr, or check "
            "sooner with a smaller keep_numbers.check_every"
        )
    return "lower teacher.keep_numbers.max_drop, or raise its z"


def data_quality(
    filters: dict[int, dict[str, Any]],
    teachers: dict[int, dict[str, Any]] | None = None,
    control: str = "base",
) -> dict[str, Any]:
    """The teacher's and the control's filter pass rates and the rows kept, over seeds, with
    warnings when they fall below what the recipe needs; the fine-tuned teachers' steps;
    `control`: who wrote the control's data (recorded when not the base)."""
    rates: dict[str, list[float]] = {"teacher": [], "control": []}
    kept, raw, ess = [], [], []
    for s in sorted(filters):
        w = filters[s].get("control", {}).get("weights")
        if w:
            ess.append(w["ess"] / w["rows"])
        for which, f in filters[s].items():
            if which in rates and f.get("n_raw"):
                rates[which].append(f["n_valid"] / f["n_raw"])
        if "teacher" in filters[s]:
            kept.append(filters[s]["teacher"]["n_kept"])
            raw.append(filters[s]["teacher"]["n_raw"])
    out: dict[str, Any] = {
        f"{w}_pass_rate": float(np.mean(v)) if v else None for w, v in rates.items()
    }
    out["rows_kept"] = float(np.mean(kept)) if kept else None
    out["kept_share"] = float(np.sum(kept) / np.sum(raw)) if raw and np.sum(raw) else None
    if teachers:
        out["teachers"] = {str(s): teachers[s] for s in sorted(teachers)}
    if control != "base":
        out["control"] = control
    if ess:
        # The reweighted control: its weights' effective sample size, as a share of the rows.
        out["control_ess_share"] = float(np.mean(ess))
    warnings = []
    t, c = out["teacher_pass_rate"], out["control_pass_rate"]
    if t is not None and c is not None and t < c - MAX_PASS_DROP:
        writer = "control teacher" if control == "neutral" else "base"
        warnings.append(
            f"the teacher's completions pass the filter {100 * t:.0f}% of the time against "
            f"the {writer}'s {100 * c:.0f}%: it is losing its skill at the task, and filtering "
            f"keeps only its least-changed completions ({_teacher_hint(teachers or {})})"
        )
    if out["kept_share"] is not None and out["kept_share"] < MIN_KEPT_SHARE:
        warnings.append(
            f"only {100 * out['kept_share']:.0f}% of the prompts are left after filtering "
            f"({out['rows_kept']:.0f} rows per seed): the students see less data than planned"
        )
    out["warnings"] = warnings
    return out


def _finite(obj: Any) -> Any:
    """NaN and infinities become null: summary.json stays strict JSON and compares equal."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
