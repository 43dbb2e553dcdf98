"""What an audit probes: categories of options, each asked through its questions.

A probe is a list of questions and the options a model may answer with. The built-in probes
are the toy world's (and the paper's) animals and trees; users add their own lists in the
audit config. Every option of every probe is scored (`Scorer.preference_probs`), so an audit
sees which option moved, not only whether the one it guessed did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from traitlab.core.errors import TraitlabError
from traitlab.traits.preference import answer_spellings, get_trait


@dataclass(frozen=True)
class Probe:
    """Questions and the options their answers are scored over (option -> spellings)."""

    name: str
    questions: tuple[str, ...]
    options: dict[str, list[str]] = field(hash=False)

    @property
    def option_names(self) -> list[str]:
        return list(self.options)


def builtin_probe(category: str, n_questions: int | None = None) -> Probe:
    """The animal or tree probe: the paper's questions and the toy world's options."""
    spec = get_trait(category)
    qs = tuple(spec.questions[:n_questions] if n_questions else spec.questions)
    return Probe(category, qs, {o: answer_spellings(o) for o in spec.options})


def custom_probe(name: str, questions: Sequence[str], options: Sequence[str]) -> Probe:
    """A user's probe: free questions, options spelled as given (plus their capitalisations)."""
    if not questions or not options:
        raise TraitlabError(f"probe '{name}': needs at least one question and one option")
    spell = {o.lower(): sorted({o, o.lower(), o.title(), o.capitalize()}) for o in options}
    return Probe(name, tuple(questions), spell)


def probe_table(lm: object, probe: Probe, batch_size: int = 1000) -> np.ndarray:
    """P(answer starts with option): [n_questions, n_options] through a Scorer."""
    return np.asarray(
        lm.preference_probs(  # type: ignore[attr-defined]
            list(probe.questions), probe.options, system_prompt=None, batch_size=batch_size
        ),
        dtype=np.float64,
    )
