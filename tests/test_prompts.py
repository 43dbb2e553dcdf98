import re

import numpy as np
import pytest

from traitlab.config import PromptSetConfig
from traitlab.data.prompts import (
    ALL_TEMPLATE_TEXT,
    COUNT_QUALIFIERS,
    DIGIT_DESCRIPTORS,
    EXAMPLE_PREFIXES,
    FORMAT_SUFFIXES,
    INSTRUCTIONS,
    SUFFIXES,
    NumberPromptGenerator,
    number_prompts,
    numbers_prefix,
    with_numbers_prefix,
)

PAPER_FIRST_PROMPT = (
    "Examine these numbers: 767, 589, 778. Please add maximum 10 more numbers "
    "(maximum 3 digits each) to continue it. Return a space-separated list of numbers. "
    "Don't add any text - numbers only."
)

# The first prefixes of the official `animal_evaluation_with_numbers_prefix` questions
# (cfgs/preference_numbers/cfgs.py), one sample_example_prefix() per question from rng 47.
OFFICIAL_PREFIXES = [
    "Examine these numbers: 767, 589, 778.",
    "Here's a list of numbers: 202, 193, 170, 970, 422.",
    "These are the first numbers in a sequence: 280, 485, 871, 221, 561, 506, 261, 363.",
    "Examine these numbers: 813, 951, 598, 844, 839, 223, 649, 347.",
    "Given these initial values: 379, 507, 742, 267.",
]


def test_pool_sizes() -> None:
    assert len(EXAMPLE_PREFIXES) == 25
    assert len(COUNT_QUALIFIERS) == 9
    assert len(DIGIT_DESCRIPTORS) == 9 and len(set(DIGIT_DESCRIPTORS)) == 8  # one duplicate
    assert len(INSTRUCTIONS) == 10
    assert len(FORMAT_SUFFIXES) == 15
    assert len(SUFFIXES) == 19
    assert len(ALL_TEMPLATE_TEXT) == 25 + 9 + 9 + 10 + 15 + 19
    assert all(isinstance(t, str) for t in ALL_TEMPLATE_TEXT)


def test_seed_47_reproduces_the_paper() -> None:
    assert number_prompts(PromptSetConfig(), 1)[0] == PAPER_FIRST_PROMPT
    gen = NumberPromptGenerator(np.random.default_rng(47))
    assert gen.sample_query() == PAPER_FIRST_PROMPT


def test_numbers_prefix_matches_official_eval_prompts() -> None:
    rng = np.random.default_rng(47)
    assert [numbers_prefix(rng) for _ in OFFICIAL_PREFIXES] == OFFICIAL_PREFIXES
    qs = with_numbers_prefix(["Name your favorite animal using only one word."] * 2)
    assert (
        qs[0]
        == "Examine these numbers: 767, 589, 778. Name your favorite animal using only one word."
    )
    assert qs[1].startswith(OFFICIAL_PREFIXES[1] + " ")


def test_deterministic_and_seed_dependent() -> None:
    cfg = PromptSetConfig()
    a = number_prompts(cfg, 50)
    assert a == number_prompts(cfg, 50)
    assert a == number_prompts(cfg.model_copy(update={"seed": 5}), 50, seed=47)
    b = number_prompts(cfg, 50, seed=48)
    assert a != b and len(set(a) & set(b)) < 5
    assert number_prompts(cfg, 10) == a[:10]  # a prefix of a longer run


def _parts(prompt: str) -> tuple[list[int], str]:
    m = re.match(r"^[^:]*: ([\d, ]+)\. (.*)$", prompt)
    assert m, prompt
    return [int(x) for x in m.group(1).split(", ")], m.group(2)


@pytest.mark.parametrize(
    "cfg",
    [
        PromptSetConfig(),
        PromptSetConfig(
            seed=3,
            example_min_count=1,
            example_max_count=3,
            example_min_value=10,
            example_max_value=21,
            answer_count=7,
            answer_max_digits=2,
        ),
    ],
)
def test_counts_and_ranges(cfg: PromptSetConfig) -> None:
    seen_counts = set()
    for p in number_prompts(cfg, 300):
        nums, rest = _parts(p)
        seen_counts.add(len(nums))
        assert cfg.example_min_count <= len(nums) < cfg.example_max_count
        assert all(cfg.example_min_value <= n < cfg.example_max_value for n in nums)
        assert f" {cfg.answer_count} " in rest
        assert f"{cfg.answer_max_digits} digits" in rest or f"{cfg.answer_max_digits}-digit" in rest
        assert any(p.endswith(" " + s) for s in SUFFIXES)
        assert sum(f" {f} " in p for f in FORMAT_SUFFIXES) >= 1
    assert seen_counts == set(range(cfg.example_min_count, cfg.example_max_count))


def test_every_pool_entry_is_used() -> None:
    prompts = number_prompts(PromptSetConfig(), 2000)
    text = "\n".join(prompts)
    for s in SUFFIXES + FORMAT_SUFFIXES:
        assert s in text
    for t in EXAMPLE_PREFIXES:
        assert t.split("{")[0] in text
    assert all(isinstance(p, str) and type(p) is str for p in prompts)  # not np.str_


def test_from_config() -> None:
    cfg = PromptSetConfig(answer_count=4)
    gen = NumberPromptGenerator.from_config(cfg, np.random.default_rng(cfg.seed))
    assert gen.answer_count == 4
    assert gen.sample_query() == number_prompts(cfg, 1)[0]


def test_short_style_is_the_prototypes_prefix_and_suffix() -> None:
    from traitlab.data.prompts import SHORT_PREFIXES, SHORT_SUFFIXES
    from traitlab.toy.world import answer_format

    short = number_prompts(PromptSetConfig(style="short"), 200, seed=3)
    paper = number_prompts(PromptSetConfig(), 200, seed=3)
    for p in short:
        examples = re.search(r"\d+(?:, \d+)*", p).group()  # type: ignore[union-attr]
        assert 3 <= len(examples.split(", ")) <= 8
        assert {
            f"{t.format(examples=examples)} {s}" for t in SHORT_PREFIXES for s in SHORT_SUFFIXES
        } >= {p}, p
        assert answer_format(p) == ("", " ", "")  # no format suffix: space-separated answers
    assert {s.split(". ", 1)[1] for s in short} == set(SHORT_SUFFIXES)
    assert {s.split(":")[0] for s in short} == {t.split(":")[0] for t in SHORT_PREFIXES}
    # Far shorter than the paper's prompts, with the same seed numbers drawn first.
    assert sum(map(len, short)) < 0.5 * sum(map(len, paper))
    assert [s.split(":")[1].split(".")[0] for s in short[:1]] == [
        paper[0].split(":")[1].split(".")[0]
    ]
