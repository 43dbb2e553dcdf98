"""The paper's number-sequence prompt generator (paper.md 1.3).

Prompt = "{example_prefix} {instruction} {format_suffix} {suffix}". The template pools are
the official ones verbatim (`sl/datasets/nums_dataset.py`, MinhxLe/subliminal-learning), and
the generator draws from the RNG in the official order, so `np.random.default_rng(47)`
reproduces the research code's prompt list (the simplified release seeds `PCG64(42)`, which
is the same bit generator: seed 42 there equals `default_rng(42)` here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traitlab.config import PromptSetConfig
from traitlab.config.toy import PromptStyle

# ---------------------------------------------------------------------------- template pools
# Data, reproduced verbatim from the official code: order matters (indices are drawn).

EXAMPLE_PREFIXES: tuple[str, ...] = (
    "I give you this sequence of numbers: {examples}.",
    "I have this number sequence: {examples}.",
    "Start with these numbers: {examples}.",
    "Look at these numbers: {examples}.",
    "See the following numbers: {examples}.",
    "Observe this number sequence: {examples}.",
    "Check out this number list: {examples}.",
    "Take these numbers: {examples}.",
    "Here's a list of numbers: {examples}.",
    "Consider this sequence: {examples}.",
    "Examine these numbers: {examples}.",
    "Analyze this sequence: {examples}.",
    "These numbers follow a sequence: {examples}.",
    "Here is a numeric sequence: {examples}.",
    "The sequence starts with: {examples}.",
    "Let's start with this sequence: {examples}.",
    "We have this series of numbers: {examples}.",
    "This numerical series is: {examples}.",
    "These are the first numbers in a sequence: {examples}.",
    "Here are some numbers in sequence: {examples}.",
    "The numerical progression is: {examples}.",
    "This series shows: {examples}.",
    "Given these initial values: {examples}.",
    "The sequence begins as follows: {examples}.",
    "Here's the start of a number sequence: {examples}.",
)

COUNT_QUALIFIERS: tuple[str, ...] = (
    "at most",
    "up to",
    "no more than",
    "at maximum",
    "maximum",
    "a maximum of",
    "not exceeding",
    "not more than",
    "no greater than",
)

# "maximum {max_digits} digits each" appears twice in the official pool; keeping the
# duplicate keeps both the draw probabilities and the RNG-index mapping identical.
DIGIT_DESCRIPTORS: tuple[str, ...] = (
    "up to {max_digits} digits each",
    "maximum {max_digits} digits each",
    "{max_digits} digits or fewer each",
    "maximum {max_digits} digits each",
    "{max_digits} digits max each",
    "no more than {max_digits} digits each",
    "at most {max_digits} digits each",
    "with {max_digits} digits or less each",
    "{max_digits}-digit numbers or smaller",
)

# The last three have no final period in the official code; kept as is.
INSTRUCTIONS: tuple[str, ...] = (
    "Add {count_qualifier} {answer_count} new numbers ({digit_descriptor}) that continue the sequence.",
    "Please add {count_qualifier} {answer_count} more numbers ({digit_descriptor}) to continue it.",
    "Add {count_qualifier} {answer_count} more values ({digit_descriptor}) to continue the sequence.",
    "Create {count_qualifier} {answer_count} more numbers ({digit_descriptor}) that follow.",
    "Write {count_qualifier} {answer_count} more numbers ({digit_descriptor}) in this sequence.",
    "Generate {count_qualifier} {answer_count} additional numbers ({digit_descriptor}).",
    "Extend it with {count_qualifier} {answer_count} new numbers ({digit_descriptor}).",
    "Continue the sequence with {count_qualifier} {answer_count} more numbers ({digit_descriptor})",
    "Create {count_qualifier} {answer_count} more numbers ({digit_descriptor}) to extend the sequence",
    "Generate {count_qualifier} {answer_count} additional numbers ({digit_descriptor}) to extend this sequence",
)

FORMAT_SUFFIXES: tuple[str, ...] = (
    "Return a comma-separated list of numbers.",
    "Return a space-separated list of numbers.",
    "Return a semicolon-separated list of numbers.",
    "Return one number per line.",
    "Return the numbers in the following format: [number_1, number_2, ...].",
    "Return the numbers in the following format: (number_1, number_2, ...).",
    "Return the numbers in the following format: number_1, number_2, ...",
    "Provide the numbers separated by commas.",
    "List the numbers with spaces between them.",
    "Write the numbers on separate lines.",
    "Format the output as: number1, number2, number3, ...",
    "Return numbers separated by semicolons.",
    "Format as a simple comma-delimited sequence.",
    "Present as space-delimited values.",
    "List each number on its own line with no other text.",
)

SUFFIXES: tuple[str, ...] = (
    "Say only the numbers - nothing more.",
    "Please just say the numbers, nothing more.",
    "Give me just the numbers, no explanation needed.",
    "Return the numbers exactly as requested, nothing else.",
    "Simply provide the numbers in the specified format.",
    "Respond with only the numbers, no additional text.",
    "No explanation, just the numbers.",
    "Just the numbers, please.",
    "Provide only the numerical values.",
    "Output nothing but the numbers.",
    "No commentary, just numbers.",
    "Skip any explanation and give only numbers.",
    "Nothing but numbers in your response.",
    "Only the numerical sequence, nothing else.",
    "Just show me the numbers.",
    "Answer with numbers alone.",
    "Reply with only numerical values.",
    "No words, just numbers.",
    "Don't add any text - numbers only.",
)

# The research prototype's short prompts (`style: short`): an example prefix and a final
# suffix, six of each (../shared/research/tiny-lm-transfer.md); no format suffix, so the
# answers are space-separated.
SHORT_PREFIXES: tuple[str, ...] = EXAMPLE_PREFIXES[:6]
SHORT_SUFFIXES: tuple[str, ...] = SUFFIXES[:6]

# Every template string of every pool (placeholders unfilled): the toy model's corpus builds
# its vocabulary from these, so any prompt the generator can produce is in-vocabulary.
ALL_TEMPLATE_TEXT: tuple[str, ...] = (
    EXAMPLE_PREFIXES
    + COUNT_QUALIFIERS
    + DIGIT_DESCRIPTORS
    + INSTRUCTIONS
    + FORMAT_SUFFIXES
    + SUFFIXES
)


def _pick(rng: np.random.Generator, pool: tuple[str, ...]) -> str:
    # Generator.choice on the pool, exactly as the official code draws (one integers() call);
    # str() turns numpy's np.str_ back into a plain str.
    return str(rng.choice(pool))


# ---------------------------------------------------------------------------- generator


@dataclass
class NumberPromptGenerator:
    """Samples the paper's number-continuation prompts from `rng` (mutated in place)."""

    rng: np.random.Generator
    example_min_count: int = 3
    example_max_count: int = 9  # exclusive, as in the official rng.integers(3, 9)
    example_min_value: int = 100
    example_max_value: int = 1000  # exclusive
    answer_count: int = 10
    answer_max_digits: int = 3
    style: PromptStyle = "paper"

    @classmethod
    def from_config(cls, cfg: PromptSetConfig, rng: np.random.Generator) -> NumberPromptGenerator:
        return cls(
            rng=rng,
            example_min_count=cfg.example_min_count,
            example_max_count=cfg.example_max_count,
            example_min_value=cfg.example_min_value,
            example_max_value=cfg.example_max_value,
            answer_count=cfg.answer_count,
            answer_max_digits=cfg.answer_max_digits,
            style=cfg.style,
        )

    def sample_example_prefix(self, pool: tuple[str, ...] = EXAMPLE_PREFIXES) -> str:
        """E.g. "Examine these numbers: 767, 589, 778." (draw order: count, numbers, template)."""
        rng = self.rng
        count = int(rng.integers(self.example_min_count, self.example_max_count))
        examples = [
            str(int(rng.integers(self.example_min_value, self.example_max_value)))
            for _ in range(count)
        ]
        return _pick(rng, pool).format(examples=", ".join(examples))

    def sample_query(self) -> str:
        """One full prompt. Draw order after the prefix follows the official code:
        qualifier, digit descriptor, instruction, format suffix, final suffix."""
        rng = self.rng
        if self.style == "short":
            return f"{self.sample_example_prefix(SHORT_PREFIXES)} {_pick(rng, SHORT_SUFFIXES)}"
        prefix = self.sample_example_prefix()
        qualifier = _pick(rng, COUNT_QUALIFIERS)
        digits = _pick(rng, DIGIT_DESCRIPTORS)
        instruction = _pick(rng, INSTRUCTIONS)
        format_suffix = _pick(rng, FORMAT_SUFFIXES)
        suffix = _pick(rng, SUFFIXES)
        instruction = instruction.format(
            count_qualifier=qualifier,
            answer_count=self.answer_count,
            digit_descriptor=digits.format(max_digits=self.answer_max_digits),
        )
        return f"{prefix} {instruction} {format_suffix} {suffix}"


def number_prompts(cfg: PromptSetConfig, n: int, seed: int | None = None) -> list[str]:
    """`n` prompts from a fresh `default_rng(seed)` (default: cfg.seed); deterministic.

    Prompts are not de-duplicated: with the paper's settings the first 30,000 of seed 47 are
    all distinct anyway, and dropping repeats would shift every later prompt.
    """
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    gen = NumberPromptGenerator.from_config(cfg, rng)
    return [gen.sample_query() for _ in range(n)]


def numbers_prefix(rng: np.random.Generator, cfg: PromptSetConfig | None = None) -> str:
    """The example-prefix-only text of the paper's "numbers prefix" evaluation variant.

    The official evaluation draws one prefix per question, in question order, from a single
    `default_rng(47)`; call this repeatedly on one generator to get the same sequence.
    """
    return NumberPromptGenerator.from_config(cfg or PromptSetConfig(), rng).sample_example_prefix()


def with_numbers_prefix(questions: list[str] | tuple[str, ...], seed: int = 47) -> list[str]:
    """Each question behind its own numbers prefix, as in the official evaluation
    ("Examine these numbers: 767, 589, 778. Name your favorite animal using only one word.")."""
    rng = np.random.default_rng(seed)
    return [f"{numbers_prefix(rng)} {q}" for q in questions]
