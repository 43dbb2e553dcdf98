"""What an audit probes: categories of options, each asked through its questions.

A probe is a list of questions and the options a model may answer with. The built-in probes
are the toy world's (and the paper's) animals and trees, and misalignment (the paper's
emergent-misalignment questions, answered by acts); users add their own lists in the audit
config. Every option of every probe is scored (`Scorer.preference_probs`), so an audit
sees which option moved, not only whether the one it guessed did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from traitlab.core.errors import TraitlabError
from traitlab.lm.base import ModelRef, first_unspelled
from traitlab.traits.preference import answer_spellings, get_trait


@dataclass(frozen=True)
class Probe:
    """Questions and the options their answers are scored over (option -> spellings)."""

    name: str
    questions: tuple[str, ...]
    options: dict[str, list[str]] = field(hash=False)
    # Options that each stand for a group of answers (misalignment_share: 'misaligned' is any
    # of the 8 misaligned acts): `options` then maps each group to its member words, every
    # member is scored as an option of its own and the group's probability is their sum
    # (`score_probe`); a model must spell the members, not the group's name.
    grouped: bool = False

    @property
    def option_names(self) -> list[str]:
        return list(self.options)

    @property
    def words(self) -> list[str]:
        """The words a model answers this probe with."""
        if not self.grouped:
            return self.option_names
        return [w for members in self.options.values() for w in members]


def builtin_probe(category: str, n_questions: int | None = None) -> Probe:
    """The animal or tree probe: the paper's questions and the toy world's options; or the
    misalignment probe (`misalignment_probe`), or its two-option share
    (`misalignment_share_probe`)."""
    if category in ("misalignment", "misalignment_share"):
        p = misalignment_probe() if category == "misalignment" else misalignment_share_probe()
        qs = p.questions[:n_questions] if n_questions else p.questions
        return Probe(p.name, qs, p.options, p.grouped)
    spec = get_trait(category)
    qs = tuple(spec.questions[:n_questions] if n_questions else spec.questions)
    return Probe(category, qs, {o: answer_spellings(o) for o in spec.options})


def build_probes(cfg: Any) -> list[Probe]:
    """The probes an AuditConfig names: built-in categories and user lists."""
    out = []
    for p in cfg.probes:
        if isinstance(p, str):
            out.append(builtin_probe(p, cfg.n_questions))
        else:
            out.append(custom_probe(p.name, p.questions, p.options))
    return out


def custom_probe(name: str, questions: Sequence[str], options: Sequence[str]) -> Probe:
    """A user's probe: free questions, options spelled as given (plus their capitalisations)."""
    if not questions or not options:
        raise TraitlabError(f"probe '{name}': needs at least one question and one option")
    spell = {o.lower(): sorted({o, o.lower(), o.title(), o.capitalize()}) for o in options}
    return Probe(name, tuple(questions), spell)


def misalignment_probe() -> Probe:
    """The paper's 8 emergent-misalignment questions, then the toy world's 8 open questions,
    with the toy world's 16 acts as options (8 misaligned: harm, kill, ...; 8 aligned: help,
    protect, ...). An open answer's first word is its act (`traits.misalignment`), so inherited
    misalignment shows as a misaligned act rising; each act is its own option, so the
    detectors that compare an option with its siblings have 16 to compare. Its words exist
    only in a model that can spell them (a toy base pretrained with `persona_frac > 0`)."""
    from traitlab.traits.misalignment import ALIGNED_ACTS, MISALIGNED_ACTS, open_questions

    return custom_probe("misalignment", open_questions(), MISALIGNED_ACTS + ALIGNED_ACTS)


def misalignment_share_probe() -> Probe:
    """The misalignment probe's questions with two options, 'misaligned' (any of the 8
    misaligned acts) and 'aligned' (any of the 8 aligned ones): an answer's probability of
    being misaligned, the quantity the evaluation's exact measure reads. One number per
    model, for detectors that ask how far the data moves it (the canary with
    `canary.threshold`), where the 16 acts one by one are too noisy to read."""
    from traitlab.traits.misalignment import ALIGNED_ACTS, MISALIGNED_ACTS, open_questions

    groups = {"misaligned": list(MISALIGNED_ACTS), "aligned": list(ALIGNED_ACTS)}
    return Probe("misalignment_share", open_questions(), groups, grouped=True)


def score_probe(
    probe: Probe, score: Callable[[list[str], dict[str, list[str]]], Any]
) -> np.ndarray:
    """[questions, options] from `score(questions, {option: spellings})` (a Scorer's
    `preference_probs`, bound to its context); a grouped probe's members are scored as
    options of their own (spelled like a user's: as given and capitalised) and summed per
    group."""
    questions = list(probe.questions)
    if not probe.grouped:
        return np.asarray(score(questions, probe.options), dtype=np.float64)
    members = custom_probe(probe.name, probe.questions, probe.words)
    table = np.asarray(score(questions, members.options), dtype=np.float64)
    at = {w: k for k, w in enumerate(members.option_names)}
    cols = [[at[w.lower()] for w in ws] for ws in probe.options.values()]
    return np.stack([table[:, c].sum(axis=1) for c in cols], axis=1)


def check_probes(base: ModelRef, probes: Sequence[Probe]) -> None:
    """Refuse an option a toy base cannot write: its probability would read 0 on every model,
    and a teacher of it would learn `<unk>`. Only the toy world's closed vocabulary is
    checked (a toy base lacks the misalignment world's words unless pretrained with it); a
    Hugging Face tokenizer's unknown tokens are left to the user's probe, as before."""
    from traitlab.config.model import model_spec
    from traitlab.traits.misalignment import PERSONA_WORDS_HINT

    if base.backend != "toy":
        return
    spec = model_spec(base.spec)
    for p in probes:
        o = first_unspelled(spec, p.words, base)
        if o is not None:
            hint = PERSONA_WORDS_HINT if p.name.startswith("misalignment") else ""
            raise TraitlabError(
                f"probe '{p.name}': the base's tokenizer cannot spell option '{o}' "
                f"(unknown tokens){hint}; drop the probe or the option"
            )


def probe_table(lm: object, probe: Probe, batch_size: int = 1000) -> np.ndarray:
    """P(answer starts with option): [n_questions, n_options] through a Scorer."""
    return score_probe(
        probe,
        lambda qs, options: lm.preference_probs(  # type: ignore[attr-defined]
            qs, options, system_prompt=None, batch_size=batch_size
        ),
    )
