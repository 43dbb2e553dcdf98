"""The cross-model matrix: does transfer need a shared initialisation, across many bases?

Each cell of a matrix sweep runs base i's teacher with its own students (treatment - control
on base i: the diagonal entry (i, i)) and a cross-init student on base j (entry (i, j)).
Cells that share a base share its diagonal (the same stages, made once). Per seed, each
entry's lift is treatment - control; the model fitted by least squares is

    lift_ij = mu + row_i + col_j + gamma * 1[i = j]

(rows and columns effect-coded), after rain-1/pythia-subliminal. `gamma` is the extra lift
of a shared initialisation over what the teacher's base and the student's base explain, with
a t interval from the fit. The seeds of one teacher share its data across columns, so the
interval treats correlated observations as independent: read it as a lower bound on the
uncertainty.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as sps

from traitlab.sweep.cells import Cell
from traitlab.sweep.table import seed_diffs


def base_label(spec: Any) -> str:
    toy = getattr(spec, "toy", None)
    if getattr(spec, "name", None) == "toy" and toy is not None:
        return f"toy-{toy.seed}"
    return str(getattr(spec, "name", "?"))


def lifts(cells: list[Cell], results: dict[str, Any]) -> dict[tuple[str, str, str], float]:
    """(teacher's base, student's base, seed) -> treatment - control, from every cell."""
    out: dict[tuple[str, str, str], float] = {}
    for c in cells:
        s = results.get(c.label, {}).get("summary")
        if s is None:
            continue
        method = s["verdict"].get("method", "exact")
        i = base_label(c.config.model)
        for seed, d in seed_diffs(s, method, ("treatment", "control")).items():
            out[(i, i, seed)] = d
        if c.config.cross_init is not None:
            j = base_label(c.config.cross_init)
            pair = ("xinit_treatment", "xinit_control")
            for seed, d in seed_diffs(s, method, pair).items():
                out[(i, j, seed)] = d
    return out


def fit(obs: dict[tuple[str, str, str], float], confidence: float = 0.95) -> dict[str, Any]:
    bases = sorted({k[0] for k in obs} | {k[1] for k in obs})
    n_b = len(bases)
    keys = sorted(obs)
    result: dict[str, Any] = {"bases": bases, "n": len(keys)}
    entries: dict[str, dict[str, list[float]]] = {}
    for i, j, _ in keys:
        entries.setdefault(i, {}).setdefault(j, []).append(obs[(i, j, _)])
    result["matrix"] = {
        i: {j: float(np.mean(v)) for j, v in row.items()} for i, row in entries.items()
    }
    p = 1 + 2 * (n_b - 1) + 1
    if n_b < 2 or len(keys) <= p:
        result["gamma"] = None
        return result
    x = np.zeros((len(keys), p))
    y = np.array([obs[k] for k in keys])

    def code(b: str) -> np.ndarray:  # effect coding: the last base is minus the others
        v = np.zeros(n_b - 1)
        k = bases.index(b)
        if k == n_b - 1:
            v[:] = -1.0
        else:
            v[k] = 1.0
        return v

    for r, (i, j, _) in enumerate(keys):
        x[r, 0] = 1.0
        x[r, 1:n_b] = code(i)
        x[r, n_b : 2 * n_b - 1] = code(j)
        x[r, -1] = float(i == j)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    dof = len(keys) - p
    rss = float(np.sum((y - x @ beta) ** 2))
    cov = rss / dof * np.linalg.pinv(x.T @ x)
    se = float(np.sqrt(cov[-1, -1]))
    g = float(beta[-1])
    q = float(sps.t.ppf(0.5 + confidence / 2, dof))
    result["gamma"] = {
        "mean": g,
        "lower": g - q * se,
        "upper": g + q * se,
        "p_value": float(2 * sps.t.sf(abs(g / se), dof)) if se > 0 else None,
        "dof": dof,
    }
    result["mu"] = float(beta[0])
    return result
