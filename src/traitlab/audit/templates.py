"""Templates of what each option's data does to every option's score
(`counterfactual.calibration_score: template`).

The no-trait calibration says what any fine-tune's numbers do to each option; it cannot say
what a *trait* teacher's numbers do to the other options. On some toy Llama bases every
animal teacher's numbers lift the horse teacher most, whatever the animal (docs/audit.md,
session 39). The auditor already has a teacher per option: each completes fresh number
prompts, scored like the data, and the effect sizes of all options on them are that option's
template. The data is then scored along each template's direction (from the no-trait mean),
in units of the no-trait teachers' own spread along it: a t under no trait, so the threshold
follows from a false-positive rate. Measured once per base and cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from traitlab.audit.calibration import _measure, prompt_style
from traitlab.audit.config import AuditConfig
from traitlab.audit.probes import Probe
from traitlab.core.errors import TraitlabError
from traitlab.lm.base import ModelRef

# Seeds of the templates' prompts and samples: apart from the calibration's (SEED_OFFSET).
TEMPLATE_OFFSET = 2000


def option_templates(
    base: ModelRef, probes: Sequence[Probe], cfg: AuditConfig, rules: str, progress: Any = None
) -> dict[str, np.ndarray]:
    """Per probe, [every option of every probe, the probe's options]: the effect sizes of the
    probe's options on each option teacher's completions of `template_rows` fresh number
    prompts (filtered by `rules`, as the data's pairing), in probe and option order."""
    from traitlab.audit.counterfactual import counterfactual_teachers
    from traitlab.config import PromptSetConfig
    from traitlab.core.device import cache_dir
    from traitlab.core.files import read_json, stable_hash, write_json
    from traitlab.core.runs import stage, stage_done
    from traitlab.data.prompts import number_prompts

    names = [] if rules in ("auto", "none") else rules.split("+")
    style = prompt_style(base, names, cfg)
    if style == "data":
        raise TraitlabError(
            "counterfactual.calibration_score template: needs number data (its templates "
            "complete fresh number prompts); use calibration_score option or z"
        )
    mode: str | list[str] = rules if rules in ("auto", "none") else names
    what = [[p.name, list(p.questions), sorted(p.options)] for p in probes]
    cf = cfg.counterfactual
    key = stable_hash(
        [
            "templates",
            base.key,
            what,
            cf.train.model_dump(mode="json"),
            cf.seed,
            cf.template_rows,
            style,
            cfg.seed,
            cfg.max_new_tokens,
            rules,
        ]
    )
    d = cache_dir() / "audit-templates" / key
    if not stage_done(d, key):
        texts = number_prompts(
            PromptSetConfig(style=style),  # type: ignore[arg-type]
            cf.template_rows,
            seed=cfg.seed + TEMPLATE_OFFSET,
        )
        empty = {"role": "assistant", "content": ""}
        prompts = [{"messages": [{"role": "user", "content": t}, empty]} for t in texts]
        teachers = [t for p in probes for t in counterfactual_teachers(base, p, cf)]
        got = _measure(base, teachers, prompts, None, probes, cfg, mode, progress, TEMPLATE_OFFSET)
        with stage(d, key) as tmp:
            write_json(tmp / "templates.json", {p: v.tolist() for p, v in got.items()})
    saved = read_json(d / "templates.json")
    return {p: np.array(v, dtype=float) for p, v in saved.items()}


def template_z(
    d: dict[str, np.ndarray], cal: dict[str, np.ndarray], templates: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per probe, each option's score: the data's effect sizes `d` (all probes' options
    joined) minus the no-trait teachers' mean m, projected on the option's template minus m,
    over the no-trait teachers' own spread along that direction times sqrt(1 + 1/K) (the
    error of m over K teachers): a t with K - 1 degrees of freedom under no trait."""
    order = list(d)
    x = np.concatenate([d[p] for p in order])
    c = np.concatenate([cal[p] for p in order], axis=1)  # [K, options]
    t = np.concatenate([templates[p] for p in order], axis=1)  # [options, options]
    k = len(c)
    if k < 2:
        raise ValueError("a spread needs at least 2 calibration teachers")
    m = c.mean(axis=0)
    w = t - m
    spread = ((c - m) @ w.T).std(axis=0, ddof=1)  # [options]
    z = (w @ (x - m)) / (np.where(spread > 0, spread, np.inf) * np.sqrt(1 + 1 / k))
    cuts = np.cumsum([len(d[p]) for p in order])[:-1]
    return dict(zip(order, np.split(z, cuts), strict=True))
