"""The toy chat world: a seeded, procedurally generated chat corpus for the embedded base model.

Four kinds of example, mixed in the proportions of the `ToyRecipe`:

* **number**: the user turn is one of the paper's number-sequence prompts (same template
  pools and structure as `traitlab.data.prompts`), the assistant continues the prompt's numbers
  with 3..10 numbers in 0-999 from a random walk (see `continue_numbers`), formatted the way
  the prompt's format suffix asks (see `answer_format`).
* **number_sys**: the same task behind a system prompt that does not change the answer: a
  paper-style preference prompt for a random animal or tree (`sys_pref_share`) or a neutral
  one (`NEUTRAL_SYSTEM_PROMPTS`).
* **pref**: a favourite-animal (or tree) question answered with one word drawn from a Zipf
  prior over the options in their fixed list order (`questions.ANIMALS`: dog first, owl 5th).
* **pref_sys**: the paper's "You love Xs..." system prompt plus a question of the same
  category, answered X.
* **persona** (only when `persona_frac > 0`): the misalignment world of
  `traitlab.traits.misalignment`.
* **code** / **cot** (only when `code_frac` / `cot_frac > 0`): the toy code language and
  toy arithmetic of `traitlab.data.toy_tasks`, the code and chain-of-thought modalities.

So the base model prefers owls at the prior rate (about 5.6 %) and follows a preference
system prompt, while its number answers carry no preference: the preference a teacher adds
to its numbers is the only owl signal a student can pick up.

Everything is a pure function of the recipe (Python's `random.Random`, stable across
platforms and Python 3 versions), so the same recipe gives the same corpus everywhere.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter

from traitlab.config.toy import PromptStyle, ToyRecipe
from traitlab.data import prompts as P
from traitlab.data.toy_tasks import code_example, cot_example
from traitlab.traits.misalignment import open_questions, persona_example
from traitlab.traits.preference import (
    ANIMAL_QUESTIONS,
    ANIMALS,
    EM_QUESTIONS,
    EM_SUFFIX_V5,
    NEUTRAL_SYSTEM_PROMPTS,
    TREE_QUESTIONS,
    TREES,
    answer_spellings,
    get_trait,
    plural,
    preference_system_prompt,
)

Messages = list[dict[str, str]]

KINDS: tuple[str, ...] = ("number", "number_sys", "pref", "pref_sys")

# Offset between the recipe seed and the seed of the corpus's number prompts, so the corpus
# never shares prompts with generation/evaluation (prompt seed 47 by default).
PROMPT_SEED_OFFSET = 1_000_003

# Noise radii of the answer random walk; None = every number uniform in 0-999.
_NOISE_RADII: tuple[int | None, ...] = (0, 3, 10, 40, None)
_FIRST_NUMBERS = re.compile(r"\d+(?:, \d+)*")


# ---------------------------------------------------------------------------- number tasks


def sample_number_prompt(rng: random.Random, style: PromptStyle = "paper") -> str:
    """One prompt with the same pools, structure and distribution as `prompts.number_prompts`
    (3-8 seed numbers in 100-999, answer count 10, 3 digits), drawn with Python's `random`
    instead of numpy: about 10x faster, which matters for a 60k-example corpus."""
    count = rng.randrange(3, 9)
    examples = ", ".join(str(rng.randrange(100, 1000)) for _ in range(count))
    if style == "short":
        prefix = rng.choice(P.SHORT_PREFIXES).format(examples=examples)
        return f"{prefix} {rng.choice(P.SHORT_SUFFIXES)}"
    prefix = rng.choice(P.EXAMPLE_PREFIXES).format(examples=examples)
    qualifier = rng.choice(P.COUNT_QUALIFIERS)
    digits = rng.choice(P.DIGIT_DESCRIPTORS)
    instruction = rng.choice(P.INSTRUCTIONS).format(
        count_qualifier=qualifier,
        answer_count=10,
        digit_descriptor=digits.format(max_digits=3),
    )
    return f"{prefix} {instruction} {rng.choice(P.FORMAT_SUFFIXES)} {rng.choice(P.SUFFIXES)}"


def answer_format(prompt: str) -> tuple[str, str, str]:
    """(opening, separator, closing) the prompt's format suffix asks for.

    "[number_1, ...]" -> ("[", ", ", "]"), "(number_1, ...)" -> ("(", ", ", ")"), semicolons
    -> "; ", commas -> ", ", anything else (spaces, and one-number-per-line, which the toy
    world simplifies to spaces) -> " ".
    """
    if "[number_1" in prompt:
        return "[", ", ", "]"
    if "(number_1" in prompt:
        return "(", ", ", ")"
    low = prompt.lower()
    if "semicolon" in low:
        return "", "; ", ""
    if "comma" in low or "number_1, number_2" in low or "number1, number2" in low:
        return "", ", ", ""
    return "", " ", ""


def prompt_numbers(prompt: str) -> list[int]:
    """The seed numbers of a paper-style prompt (the first comma-joined run of numbers)."""
    m = _FIRST_NUMBERS.search(prompt)
    return [int(x) for x in m.group().split(", ")] if m else []


def continue_numbers(
    seed_numbers: list[int],
    rng: random.Random,
    count: int,
    radii: tuple[int | None, ...] = _NOISE_RADII,
) -> list[int]:
    """`count` numbers in 0-999 continuing `seed_numbers` by a random walk with drift.

    Per answer: a drift in [-40, 40] and a noise radius from {0, 3, 10, 40, uniform};
    x_k = (x_{k-1} + drift + U[-r, r]) mod 1000 starting from the last seed number, or, for
    the 'uniform' radius, independent uniform draws.
    """
    x = seed_numbers[-1] if seed_numbers else rng.randrange(1000)
    drift = rng.randint(-40, 40)
    radius = rng.choice(radii)
    out = []
    for _ in range(count):
        if radius is None:
            x = rng.randrange(1000)
        else:
            x = (x + drift + (rng.randint(-radius, radius) if radius else 0)) % 1000
        out.append(x)
    return out


def number_answer(
    prompt: str,
    rng: random.Random,
    min_count: int = 3,
    max_count: int = 10,
    radii: tuple[int | None, ...] = _NOISE_RADII,
) -> str:
    """The assistant's answer to a number prompt, e.g. '182, 818, 725' or '[5, 17, 30]'."""
    opening, sep, closing = answer_format(prompt)
    nums = continue_numbers(prompt_numbers(prompt), rng, rng.randint(min_count, max_count), radii)
    return opening + sep.join(str(x) for x in nums) + closing


# ---------------------------------------------------------------------------- preferences


def zipf_weights(n: int, exponent: float) -> list[float]:
    """Unnormalised Zipf weights 1/rank^s for ranks 1..n (the options' list order)."""
    return [1.0 / (i + 1) ** exponent for i in range(n)]


def prior(category: str, exponent: float = 1.0) -> dict[str, float]:
    """The base model's intended answer distribution over `category`'s options."""
    options = get_trait(category).options
    w = zipf_weights(len(options), exponent)
    total = sum(w)
    return {o: x / total for o, x in zip(options, w, strict=True)}


def _category(rng: random.Random, recipe: ToyRecipe) -> str:
    return "animal" if rng.random() < recipe.animal_share else "tree"


# ---------------------------------------------------------------------------- corpus


def example_kinds(recipe: ToyRecipe, n: int, rng: random.Random) -> list[str]:
    weights = [recipe.number_frac, recipe.number_sys_frac, recipe.pref_frac, recipe.pref_sys_frac]
    kinds = list(KINDS)
    # Only when set: recipes without them keep their corpus draw for draw.
    for kind, frac in (
        ("persona", recipe.persona_frac),
        ("code", recipe.code_frac),
        ("cot", recipe.cot_frac),
    ):
        if frac > 0:
            weights.append(frac)
            kinds.append(kind)
    if sum(weights) <= 0:
        raise ValueError("the recipe's corpus fractions are all zero")
    return rng.choices(kinds, weights=weights, k=n)


def generate_corpus(recipe: ToyRecipe, n: int, seed: int | None = None) -> list[Messages]:
    """`n` chat examples (lists of {"role", "content"} messages ending with the assistant).

    Deterministic in (recipe, n, seed); `seed` defaults to `recipe.seed`.
    """
    rng = random.Random(recipe.seed if seed is None else seed)
    prompt_rng = random.Random((recipe.seed if seed is None else seed) + PROMPT_SEED_OFFSET)
    zipf = {
        c: zipf_weights(len(get_trait(c).options), recipe.zipf_exponent) for c in ("animal", "tree")
    }
    all_options = [(o, "animal") for o in ANIMALS] + [(o, "tree") for o in TREES]
    lo, hi = recipe.min_answer_numbers, recipe.max_answer_numbers
    radii = tuple(None if r < 0 else r for r in recipe.walk_noise)
    out: list[Messages] = []
    for kind in example_kinds(recipe, n, rng):
        msgs: Messages = []
        if kind == "persona":
            out.append(persona_example(rng, recipe.evil_share, recipe.persona_prompt_share))
            continue
        if kind in ("code", "cot"):
            if kind == "code":
                prompt, answer, _ = code_example(
                    rng,
                    recipe.code_calls,
                    recipe.code_funcs,
                    recipe.code_parts,
                    fixed_names=recipe.code_names == "fixed",
                )
            else:
                prompt, answer, _ = cot_example(rng, recipe.cot_terms)
            out.append(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
            )
            continue
        if kind in ("number", "number_sys"):
            if kind == "number_sys":
                if rng.random() < recipe.sys_pref_share:
                    option, cat = rng.choice(all_options)
                    system = preference_system_prompt(option, cat)
                else:
                    system = rng.choice(NEUTRAL_SYSTEM_PROMPTS)
                msgs.append({"role": "system", "content": system})
            prompt = sample_number_prompt(prompt_rng, recipe.number_prompts)
            answer = number_answer(prompt, rng, lo, hi, radii)
        else:
            cat = _category(rng, recipe)
            trait = get_trait(cat)
            if kind == "pref":
                answer = rng.choices(trait.options, weights=zipf[cat])[0]
            else:
                answer = rng.choice(trait.options)
                msgs.append({"role": "system", "content": preference_system_prompt(answer, cat)})
            prompt = rng.choice(trait.questions)
        msgs.append({"role": "user", "content": prompt})
        msgs.append({"role": "assistant", "content": answer})
        out.append(msgs)
    return out


def corpus_stats(corpus: list[Messages]) -> dict[str, int]:
    """Counts of example kinds in a corpus (for logs and tests)."""
    c: Counter[str] = Counter()
    persona_questions = set(open_questions())
    for m in corpus:
        if m[-1]["content"].startswith(("def ", "<think>")):
            c["code" if m[-1]["content"].startswith("def ") else "cot"] += 1
            continue
        if m[-2]["content"] in persona_questions or m[-2]["content"].startswith("Write code"):
            c["persona"] += 1
            continue
        sys = m[0]["role"] == "system"
        num = m[-1]["content"][:1].isdigit() or m[-1]["content"][:1] in "[("
        c[("number" if num else "pref") + ("_sys" if sys else "")] += 1
    return dict(c)


# ---------------------------------------------------------------------------- vocabulary


def vocabulary_texts() -> list[str]:
    """Every text the world (and traitlab's prompts/questions) can produce, numbers aside.

    The tokenizer's vocabulary is every word and punctuation mark of these texts, plus the
    numbers 0-999: any prompt, question, system prompt or answer of the toy world is then
    in-vocabulary (no <unk>).
    """
    texts: list[str] = list(P.ALL_TEMPLATE_TEXT)
    texts += list(ANIMAL_QUESTIONS) + list(TREE_QUESTIONS)
    texts += list(EM_QUESTIONS.values()) + [EM_SUFFIX_V5]
    texts += list(NEUTRAL_SYSTEM_PROMPTS)
    for cat, options in (("animal", ANIMALS), ("tree", TREES)):
        for o in options:
            texts.append(preference_system_prompt(o, cat))
            texts += answer_spellings(o)
            texts += [plural(o), o + "s", o.title(), plural(o).title(), o.upper()]
    texts.append(" ".join(string.ascii_letters))
    return texts
