"""Counterfactual teachers: whose writing does the data look like?

For every option of every probe the audit builds the teacher that *would* have that trait,
from the base alone (no access to the real teacher): `finetuned`, a base copy fine-tuned to
answer the probe's questions with the option (the paper's Fig. 14 teacher, short), or
`prompted`, the base behind the option's preference system prompt (no training), or `both`
(a fine-tuned teacher writes differently from a prompted one, and the data may come from
either: each option counts with the teacher that explains the data better). Each data row i
then gets a lift per option, l_o(i) = log p_To(data_i) - log p_base(data_i).

Statistic `null` (the default): the data is compared with the best *no-trait* explanation of
it, the base itself or a null teacher (the base fine-tuned as long on its own answers to the
same questions: a fine-tune that teaches nothing new; for prompted teachers, the base behind
a neutral system prompt, so that what any system prompt does to the numbers cancels). The
null is the candidate with the highest mean lift; option o scores the t over rows of
l_o(i) - l_null(i), a likelihood-ratio test of "a teacher of o wrote this" against "a no-trait
fine-tune wrote this". Any fine-tune on one-word answers moves the numbers alike, and a null
teacher moves them the same way, so that shared shift cancels without a fit, and data
written by a fine-tune without a trait (which sharpens the prior) is explained best by the
null.

Statistic `shared` (the first version): per row, data minus its paired reference row,

    s_o(i) = [log p_To(data_i) - log p_base(data_i)] - [log p_To(ref_i) - log p_base(ref_i)],

with the shift every option's teacher shares regressed out (`contrast`). On the benchmark it
scored neutral teachers' data as high as traits' data.
Fine-tuned teachers are cached per (base, probe, recipe) under the traitlab cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from traitlab.audit.config import NULL_STATISTICS, CounterfactualConfig
from traitlab.audit.lifts import CounterfactualResult, combine_lifts
from traitlab.audit.probes import Probe
from traitlab.core.device import cache_dir
from traitlab.core.files import stable_hash
from traitlab.core.runs import stage, stage_done
from traitlab.lm.base import ModelRef, Trainer, opened, require
from traitlab.traits.preference import (
    NEUTRAL_SYSTEM_PROMPTS,
    draw_answers,
    preference_system_prompt,
)

Row = dict[str, Any]


def _teacher_rows(probe: Probe, answers: Sequence[str]) -> list[Row]:
    return [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in zip(probe.questions, answers, strict=True)
    ]


def null_answers(base_probs: np.ndarray, probe: Probe, seed: int) -> list[str]:
    """One answer per question, drawn from the base's own distribution over the probe's
    options for that question ([questions, options] probabilities, renormalised)."""
    return draw_answers(base_probs, probe.option_names, seed)


def _teacher(
    base: ModelRef, rows: list[Row], tag: Sequence[Any], cfg: CounterfactualConfig
) -> ModelRef:
    # The tag is spliced into the key, so an option teacher keeps the key it had before null
    # teachers shared this helper (cached teachers stay valid). The fine-tuning seed changes
    # the teacher, so it is part of the key; seed 0 is left out so that the teachers cached
    # before it was keep their keys.
    parts = ["cf-teacher", base.key, *tag, cfg.train.model_dump(mode="json")]
    key = stable_hash(parts + ([f"seed={cfg.seed}"] if cfg.seed else []))
    d = cache_dir() / "audit-teachers" / key
    if not stage_done(d, key):
        with opened(base) as lm, stage(d, key) as tmp:
            require(lm, Trainer, "fine-tune (the counterfactual teachers)")
            lm.finetune(rows, cfg.train, seed=cfg.seed, out_dir=tmp, key=key)
    return ModelRef.load(d)


def counterfactual_teachers(
    base: ModelRef, probe: Probe, cfg: CounterfactualConfig, progress: Any = None
) -> list[ModelRef]:
    """One fine-tuned teacher per option of `probe`, cached (built once per base)."""
    out = []
    n = len(probe.option_names)
    for k, option in enumerate(probe.option_names):
        rows = _teacher_rows(probe, [option] * len(probe.questions))
        out.append(_teacher(base, rows, [probe.questions, option], cfg))
        if progress is not None:
            progress((k + 1) / n)
    return out


def null_teachers(
    base: ModelRef, probe: Probe, cfg: CounterfactualConfig, lm: Any = None
) -> list[ModelRef]:
    """`cfg.null_teachers` base copies fine-tuned like the option teachers on the probe's
    questions answered by the base's own sampled answers: fine-tunes without a trait (a
    prompted audit's nulls are `prompted_null_lifts`). `lm`: the base, if already opened."""
    if not cfg.null_teachers:
        return []
    from traitlab.audit.probes import probe_table

    if lm is not None:
        probs = probe_table(lm, probe)
    else:
        with opened(base) as lm:
            probs = probe_table(lm, probe)
    out = []
    for k in range(cfg.null_teachers):
        answers = null_answers(probs, probe, seed=cfg.seed + k)
        out.append(_teacher(base, _teacher_rows(probe, answers), ["null", answers], cfg))
    return out


def dataset_steps(cfg: CounterfactualConfig) -> list[int]:
    """The dataset teachers' fine-tune lengths: `dataset_steps`, else the recipe's own."""
    return list(cfg.dataset_steps) or [int(cfg.dataset_train.max_steps or 0)]


def dataset_teachers(
    base: ModelRef, lm: Any, cfg: CounterfactualConfig
) -> tuple[list[list[ModelRef]], list[list[ModelRef]]]:
    """Per `cfg.datasets` entry and per length of `dataset_steps`, the base fine-tuned on it
    (its trait's teacher), and its null: the base fine-tuned as long on its own sampled
    answers to the same prompts (the answers as long as the dataset's longest, in the base's
    tokens), so that what fine-tuning on these prompts does to the numbers whatever the
    answers is not read as the trait. `lm`: the base, opened. Cached like the option
    teachers (a length's teacher keeps the key it had before lengths were configurable)."""
    from traitlab.config import GenerateConfig
    from traitlab.data.generate import generate_rows
    from traitlab.data.rows import chat_completion, chat_user_text, to_chat_rows
    from traitlab.traits.teacher import load_teacher_data

    teachers, nulls = [], []
    for name, spec in cfg.datasets.items():
        rows = load_teacher_data(spec, f"counterfactual.datasets.{name}")
        digest = stable_hash(rows)
        tok = lm.tokenizer
        longest = max(
            len(tok(chat_completion(r), add_special_tokens=False)["input_ids"]) for r in rows
        )
        gen = GenerateConfig(max_new_tokens=longest + 1, batch_size=256)
        own = to_chat_rows(generate_rows(lm, [chat_user_text(r) for r in rows], gen, seed=cfg.seed))
        ts, ns = [], []
        for steps in dataset_steps(cfg):
            train = cfg.model_copy(
                update={"train": cfg.dataset_train.model_copy(update={"max_steps": steps})}
            )
            ts.append(_teacher(base, rows, ["dataset", digest], train))
            ns.append(_teacher(base, own, ["dataset-null", digest, stable_hash(own)], train))
        teachers.append(ts)
        nulls.append(ns)
    return teachers, nulls


def _loglik(lm: Any, rows: list[Row], system: str | None = None) -> np.ndarray:
    from traitlab.audit.rows import token_logprobs
    from traitlab.lm.hf.rowscore import behind_system

    rows = behind_system(rows, system)
    return np.array([lp.sum() for _, lp in token_logprobs(lm.model, lm.tokenizer, rows)])


class PairedLoglik:
    """Summed completion log-likelihoods of the data rows and of their reference rows under
    one model after another. Each data row and its reference row complete the same prompt, so
    they are scored as one shared-prompt pair (`lm.hf.pairs`: the prompt computed once, the
    same numbers), encoded once for all the models of one tokenizer; a model whose attention
    cannot take pairs scores the rows apart."""

    def __init__(self, data: list[Row], reference: list[Row]) -> None:
        self.data, self.reference = data, reference
        self._pairs: dict[tuple[Any, ...], Any] = {}

    def __call__(self, lm: Any) -> tuple[np.ndarray, np.ndarray]:
        from traitlab.core.errors import TraitlabError
        from traitlab.lm.hf.pairs import check_pairs, encode_pairs, pair_logliks

        tok = lm.tokenizer
        key = (type(tok).__name__, len(tok), str(getattr(tok, "chat_template", "")))
        if key not in self._pairs:
            self._pairs[key] = encode_pairs(tok, self.data, self.reference, 1024)
        pairs = self._pairs[key]
        try:
            check_pairs(lm.model, tok, pairs[0])
        except TraitlabError:
            return _loglik(lm, self.data), _loglik(lm, self.reference)
        return pair_logliks(lm.model, tok, pairs)


def option_prompts(option: str, category: str, templates: Sequence[str] = ()) -> list[str]:
    """An option's system prompts: the paper's, then each extra wording filled in."""
    extra = [t.format(option=option, category=category) for t in templates]
    return [preference_system_prompt(option, category), *extra]


def best_wording(lifts: Sequence[np.ndarray]) -> int:
    """Of one option's wordings' lifts on the data, the one that explains the data best."""
    return int(np.argmax([float(x.mean()) for x in lifts]))


def prompted_lifts(
    lm: Any, rows: list[Row], base_ll: np.ndarray, probe: Probe, templates: Sequence[str] = ()
) -> np.ndarray:
    """[options, rows]: l_o(i) of the base behind each option's preference system prompt (of
    several wordings, the one that explains the rows best)."""
    out = []
    for o in probe.option_names:
        lifts = [_loglik(lm, rows, sp) - base_ll for sp in option_prompts(o, probe.name, templates)]
        out.append(lifts[best_wording(lifts)])
    return np.stack(out)


def prompted_null_lifts(lm: Any, rows: list[Row], base_ll: np.ndarray, n: int) -> np.ndarray:
    """[n, rows]: l(i) of the base behind the first n neutral system prompts (no trait)."""
    out = [_loglik(lm, rows, sp) - base_ll for sp in NEUTRAL_SYSTEM_PROMPTS[:n]]
    return np.stack(out) if out else np.zeros((0, len(rows)))


def _teacher_logliks(
    teachers: Sequence[ModelRef], scorer: PairedLoglik
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for ref in teachers:
        with opened(ref) as t:
            yield scorer(t)


def _lifts(
    scored: Iterable[tuple[np.ndarray, np.ndarray]], b_d: np.ndarray, b_r: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per option, from its teacher's (data, reference) log-likelihoods: the lift l_o on the
    data and the lift on the reference (s_o, the score, is their difference)."""
    lifts, ref_lifts = [], []
    for t_d, t_r in scored:
        lifts.append(t_d - b_d)
        ref_lifts.append(t_r - b_r)
    return np.stack(lifts), np.stack(ref_lifts)


def _best_prompted(
    lm: Any, data: list[Row], reference: list[Row], b_d: np.ndarray, prompts: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(data, reference) log-likelihoods behind the wording that explains the data best."""
    from traitlab.lm.hf.rowscore import behind_system

    scored = [
        PairedLoglik(behind_system(data, sp), behind_system(reference, sp))(lm) for sp in prompts
    ]
    return scored[best_wording([d - b_d for d, _ in scored])]


def run_counterfactual(
    base: ModelRef,
    data: list[Row],
    reference: list[Row],
    probes: Sequence[Probe],
    cfg: CounterfactualConfig,
    progress: Any = None,
) -> list[CounterfactualResult]:
    finetuned = cfg.kind in ("finetuned", "both")
    tpl = cfg.prompt_templates
    both_ll = PairedLoglik(data, reference)
    with opened(base) as lm:
        b_d, b_r = both_ll(lm)
        # Null teachers carry no trait whichever probe's questions taught them: every probe's
        # options are compared with all of them.
        null_refs = []
        if cfg.statistic in NULL_STATISTICS and finetuned:
            null_refs = [ref for p in probes for ref in null_teachers(base, p, cfg, lm)]
        d_teachers, d_nulls = dataset_teachers(base, lm, cfg) if cfg.datasets else ([], [])
        null_refs += [ref for lengths in d_nulls for ref in lengths]
        nulls, null_refs_lift = [], []
        for ref in null_refs:
            with opened(ref) as t:
                t_d, t_r = both_ll(t)
            nulls.append(t_d - b_d)
            null_refs_lift.append(t_r - b_r)
        if cfg.statistic == "null" and cfg.kind != "finetuned":
            nulls += list(prompted_null_lifts(lm, data, b_d, cfg.prompted_nulls))
        null = np.stack(nulls) if nulls else np.zeros((0, len(data)))
        # The fine-tuned nulls' lifts on the reference rows (the first rows of `null`; a
        # prompted null has none): what a paired statistic of the nulls needs.
        null_ref = np.stack(null_refs_lift) if null_refs_lift else np.zeros((0, len(data)))
        out = []
        for p in probes:
            if finetuned:
                scored = _teacher_logliks(counterfactual_teachers(base, p, cfg, progress), both_ll)
            else:
                scored = (
                    _best_prompted(lm, data, reference, b_d, option_prompts(o, p.name, tpl))
                    for o in p.option_names
                )
            lift, ref_lift = _lifts(scored, b_d, b_r)
            both = prompted_lifts(lm, data, b_d, p, tpl) if cfg.kind == "both" else None
            out.append(
                CounterfactualResult(
                    p.name, p.option_names, lift - ref_lift, lift, null, both, null_ref=null_ref
                )
            )
        if d_teachers:
            # Each dataset's teacher: its one length's, or with several lengths them all
            # combined per row (how long the data's teacher trained is unknown).
            several = len(dataset_steps(cfg)) > 1
            how = "best" if cfg.dataset_compare == "best" else ("mixture" if several else "one")
            per = [_lifts(_teacher_logliks(ts, both_ll), b_d, b_r) for ts in d_teachers]
            lift = np.stack([combine_lifts(lf, how) for lf, _ in per])
            scores = lift - np.stack([combine_lifts(rf, how) for _, rf in per])
            out.append(
                CounterfactualResult("datasets", list(cfg.datasets), scores, lift, null, None, how)
            )
    return out
