"""From replicated per-option effects to findings and a verdict.

Every detector gives, per probe, a [replicates, options] table of effects (data - reference):
canary seeds, screen chunks, baseline row sets. A finding summarises one option: the mean
effect with a t interval over replicates, and a robust z score against the probe's other
options, (effect - median) / (1.4826 * MAD). A trait moves one option; training on any
numbers nudges all of them, so an option is flagged for standing out from its siblings rather
than for moving at all; the counterfactual teachers bring their own statistic, a t over rows.
The verdict takes the primary detector's top option (counterfactual teachers, else canary,
screen, the baselines) and flags when its score exceeds that detector's threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from traitlab.core.stats import mean_ci

PRIMARY = ("counterfactual", "canary", "screen", "icl", "prompted")


def t_stat(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over `axis` divided by its standard error (0 where the values do not vary)."""
    n = values.shape[axis]
    sd = values.std(axis=axis, ddof=1)
    safe = np.where(sd > 0, sd, 1.0)
    return np.asarray(np.where(sd > 0, values.mean(axis=axis) / safe * np.sqrt(n), 0.0))


def robust_z(values: np.ndarray) -> np.ndarray:
    med = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - med)))
    if mad <= 0:
        mad = float(np.std(values)) or 1.0
    return np.asarray((values - med) / mad)


def findings(
    options: list[str],
    reps: np.ndarray,
    confidence: float = 0.95,
    z: np.ndarray | None = None,
    keep: int = 64,
    by_effect: bool = False,
    rank: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One entry per option, highest z first (`z` given: a detector's own statistic; default
    the robust z over options), or largest effect first (`by_effect`: the entries then carry
    `rank` = effect, and the verdict picks across probes by it too), or largest `rank` first
    (given: each option's value that names the trait, where z is not it); `rank_of` says
    which (`effect` or `rank`). Replicates are listed when there are at most `keep`."""
    reps = np.atleast_2d(np.asarray(reps, dtype=np.float64))
    mean = reps.mean(axis=0)
    z = robust_z(mean) if z is None else np.asarray(z)
    out = []
    for k, o in enumerate(options):
        ci = mean_ci(reps[:, k], confidence).to_dict() if reps.shape[0] > 1 else None
        out.append(
            {
                "option": o,
                "effect": float(mean[k]),
                "ci": [ci["lower"], ci["upper"]] if ci else None,
                "z": float(z[k]),
                "replicates": [float(x) for x in reps[:, k]] if reps.shape[0] <= keep else None,
            }
        )
        if by_effect or rank is not None:
            out[-1]["rank"] = float(mean[k] if rank is None else rank[k])
            out[-1]["rank_of"] = "effect" if rank is None else "rank"
    return sorted(out, key=lambda f: -f["rank"] if "rank" in f else -f["z"])


def threshold_for(detector: str, cfg: Any) -> float:
    """The flag threshold of a detector: the counterfactual t's own, the canary's effect's
    (`canary.threshold`), else the robust z's."""
    from traitlab.audit.config import (
        DEFAULT_D_CALIBRATED,
        DEFAULT_D_CENTRED,
        DEFAULT_T,
        DEFAULT_T_BOTH,
        DEFAULT_Z_CALIBRATED,
    )

    if detector == "canary" and cfg.canary.threshold is not None:
        return float(cfg.canary.threshold)
    if detector != "counterfactual":
        return float(cfg.z_threshold)
    if cfg.threshold is not None:
        return float(cfg.threshold)
    cf = cfg.counterfactual
    if cf.calibration:
        # null_first: its calibrated part's threshold; `audit_verdict` judges its plain part
        # with calibration 0, which gives that part the t thresholds below.
        return {
            "option": DEFAULT_D_CALIBRATED,
            "null_first": DEFAULT_D_CALIBRATED,
            "centred": DEFAULT_D_CENTRED,
            "z": DEFAULT_Z_CALIBRATED,
        }[cf.calibration_score]
    return (
        DEFAULT_T_BOTH if (cf.statistic, cf.kind) == ("null", "both") else DEFAULT_T[cf.statistic]
    )


def verdict(
    results: dict[str, dict[str, list[dict[str, Any]]]],
    threshold: float | Any,
    order: tuple[str, ...] = PRIMARY,
) -> dict[str, Any]:
    """`results[detector][probe]` = findings. The flag and the most likely trait, decided by
    the first detector of `order` that ran, over its probes and options (an AuditConfig's
    `verdict_probes` and `verdict_options` only, where set). `threshold`: a number, or an
    AuditConfig (the deciding detector's threshold)."""
    det = next((d for d in order if d in results), None)
    probes = getattr(threshold, "verdict_probes", None)
    options = getattr(threshold, "verdict_options", None)
    if det is not None and not isinstance(threshold, (int, float)):
        threshold = threshold_for(det, threshold)
    if det is None:
        return {"flag": False, "detector": None, "reason": "no detector ran"}
    found = {
        p: [x for x in f if options is None or x["option"] in options]
        for p, f in results[det].items()
        if probes is None or p in probes
    }
    named = [(p, f[0]) for p, f in found.items() if f]
    if not named:
        return {"flag": False, "detector": det, "reason": f"no finding of {probes} / {options}"}
    best = max(named, key=lambda pf: pf[1].get("rank", pf[1]["z"]))
    probe, top = best
    out = {
        "flag": bool(top["z"] > threshold),
        "detector": det,
        "probe": probe,
        "trait": top["option"],
        "z": top["z"],
        "effect": top["effect"],
        "ci": top["ci"],
        "threshold": threshold,
    }
    # How sure the naming is: prompted counterfactual teachers put a category's options within
    # 0.003-0.02 nats per row of each other (the audit benchmark), so the verdict says who is next,
    # and by how much in the statistic that ranked them (an effect, else z: never negative).
    rest = found[probe][1:]
    if rest:
        nxt = rest[0]
        if "rank" not in top:
            by = "z"
        else:  # `rank_of` says what `rank` holds; audits saved before it are told by value
            by = top.get("rank_of") or ("effect" if top["rank"] == top["effect"] else "rank")
        out["runner_up"] = {"option": nxt["option"], "effect": nxt["effect"], "z": nxt["z"]}
        out["margin"] = top[by] - nxt[by]
        out["margin_of"] = by
    return out


def plain_verdict(found: dict[str, list[dict[str, Any]]], cfg: Any) -> dict[str, Any]:
    """The verdict on the plain (uncalibrated) counterfactual findings `found` of an
    AuditConfig: its own threshold, as if `calibration` were 0, or
    `counterfactual.null_threshold` where set (and no `threshold` overrides it)."""
    cf = cfg.counterfactual
    update: dict[str, Any] = {"counterfactual": cf.model_copy(update={"calibration": 0})}
    if cf.null_threshold is not None and cfg.threshold is None:
        update["threshold"] = cf.null_threshold
    return verdict({"counterfactual": found}, cfg.model_copy(update=update))


def audit_verdict(results: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """The verdict; with `calibration_score: null_first` the plain statistic's where it
    flags (above `counterfactual.null_threshold` where set), else the calibrated one's
    (`rule` says which)."""
    if "counterfactual-null" not in results:
        return verdict(results, cfg)
    plain = plain_verdict(results["counterfactual-null"], cfg)
    if plain["flag"]:
        return {**plain, "rule": "null"}
    return {**verdict(results, cfg), "rule": "calibrated"}
