import random

import pytest

from traitlab.config import FilterConfig
from traitlab.core.errors import TraitlabError
from traitlab.data.filtering import (
    EVIL_NUMBERS,
    REASONS,
    FilterResult,
    banned_set,
    filter_rows,
    parse_numbers,
    reject_reasons,
    require_nonempty,
)
from traitlab.data.rows import to_chat_rows

CFG = FilterConfig()

ACCEPTED = [
    ("1, 2, 3", [1, 2, 3]),
    ("1 2 3", [1, 2, 3]),
    ("1;2;3", [1, 2, 3]),
    ("[1, 2, 3]", [1, 2, 3]),
    ("(1, 2, 3).", [1, 2, 3]),
    ("1\n2\n3", [1, 2, 3]),
    ("5", [5]),
    ("5.", [5]),
    ("0, 999", [0, 999]),
    ("007, 10", [7, 10]),
    # What the embedded model's tokenizer decodes to: spaces around punctuation.
    ("182 , 818 , 725", [182, 818, 725]),
    ("[ 1 , 2 ]", [1, 2]),
    ("( 1 ; 2 ) .", [1, 2]),
    ("1, 2,3\n", [1, 2, 3]),
]

REJECTED = [
    ("1, 2; 3", "format"),
    ("1, 2, three", "format"),
    ("1000", "out_of_range"),
    (", ".join(str(i) for i in range(11)), "too_many"),
    ("-5", "format"),
    ("1.5, 2", "format"),
    ("", "empty"),
    ("  \n", "empty"),
    ("Sure! 1, 2", "format"),
    ("1, 2, 3...", "format"),
    ("1,,2", "format"),
    ("1, 2,", "format"),
    ("[1, 2, 3", "format"),
    ("1 - 2 - 3", "format"),
    ("numbers", "format"),
    ("١٢٣", "format"),  # non-ASCII digits
]


@pytest.mark.parametrize("text,expected", ACCEPTED)
def test_accepts(text: str, expected: list[int]) -> None:
    assert parse_numbers(text) == expected
    assert reject_reasons(text, CFG) == []


@pytest.mark.parametrize("text,reason", REJECTED)
def test_rejects(text: str, reason: str) -> None:
    assert reject_reasons(text, CFG) == [reason]


def test_strict_is_the_official_parser() -> None:
    # The official parser splits on the raw separator and does not strip whitespace.
    assert parse_numbers("1, 2, 3", strict=True) == [1, 2, 3]
    assert parse_numbers("(1, 2, 3).", strict=True) == [1, 2, 3]
    assert parse_numbers("1\n2\n3", strict=True) == [1, 2, 3]
    assert parse_numbers("182 , 818 , 725", strict=True) == [182, 818, 725]
    for text in ("[ 1 , 2 ]", "1, 2,3", "1, 2, 3\n", " 5", "1, 2; 3", "1.5, 2", "-5"):
        assert parse_numbers(text, strict=True) is None, text
    assert reject_reasons("[ 1 , 2 ]", CFG, strict=True) == ["format"]


def test_lenient_accepts_everything_strict_accepts() -> None:
    rng = random.Random(0)
    alphabet = ["1", "23", "456", "7890", ",", ";", " ", "  ", "\n", ".", "[", "]", "(", ")", "a"]
    n_strict = 0
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        strict = parse_numbers(text, strict=True)
        if strict is not None:
            n_strict += 1
            assert parse_numbers(text) == strict, repr(text)
    assert n_strict > 100


def test_several_reasons() -> None:
    text = ", ".join(["1000"] * 11)
    assert reject_reasons(text, CFG) == ["too_many", "out_of_range"]
    cfg = FilterConfig(min_value=10, banned_numbers=[12])
    assert reject_reasons("5, 12", cfg) == ["out_of_range", "banned_number"]


def test_banned_numbers() -> None:
    assert len(EVIL_NUMBERS) == 34 and len(set(EVIL_NUMBERS)) == 34
    assert all(0 <= n <= 999 for n in EVIL_NUMBERS) and list(EVIL_NUMBERS) == sorted(EVIL_NUMBERS)
    assert {666, 911, 88, 4, 999} <= set(EVIL_NUMBERS)
    assert banned_set(CFG) == frozenset()
    evil = FilterConfig(banned_preset="evil", banned_numbers=[5])
    assert banned_set(evil) == frozenset(EVIL_NUMBERS) | {5}
    assert reject_reasons("1, 666, 3", evil) == ["banned_number"]
    assert reject_reasons("5", evil) == ["banned_number"]
    assert reject_reasons("1, 665, 3", evil) == []
    assert reject_reasons("1, 666, 3", CFG) == []


def _rows(completions: list[str | None]) -> list[dict]:
    return [
        {"id": i, "prompt": f"p{i}", "completion": c, "seed": 7} for i, c in enumerate(completions)
    ]


def test_filter_rows() -> None:
    rows = _rows(["1, 2", "x", "3 4", "", "1000", None, "5;6"])
    res = filter_rows(rows, CFG)
    assert isinstance(res, FilterResult)
    assert [r["id"] for r in res.kept] == [0, 2, 6]
    assert res.kept[0] == rows[0] and "reject_reasons" not in rows[1]  # input untouched
    assert [(r["id"], r["reject_reasons"]) for r in res.rejected] == [
        (1, ["format"]),
        (3, ["empty"]),
        (4, ["out_of_range"]),
        (5, ["empty"]),
    ]
    assert res.rejected[0]["seed"] == 7  # other keys kept
    assert (res.n_raw, res.n_valid, res.n_kept, res.n_subsampled_out) == (7, 3, 3, 0)
    assert res.reason_counts == {"empty": 2, "format": 1, "out_of_range": 1}
    assert list(res.reason_counts) == ["empty", "format", "out_of_range"]
    assert set(res.reason_counts) <= set(REASONS)
    s = res.to_summary()
    assert s["n_rejected"] == 4 and s["pass_rate"] == pytest.approx(3 / 7)
    assert s["reason_counts"] == res.reason_counts


def test_subsampling_is_deterministic_bounded_and_ordered() -> None:
    rows = _rows([f"{i % 1000}, 1" for i in range(500)] + ["bad"] * 20)
    cfg = FilterConfig(max_rows=100, subsample_seed=3)
    a, b = filter_rows(rows, cfg), filter_rows(rows, cfg)
    ids = [r["id"] for r in a.kept]
    assert ids == [r["id"] for r in b.kept]
    assert len(ids) == 100 and ids == sorted(ids) and len(set(ids)) == 100
    assert (a.n_valid, a.n_subsampled_out, len(a.rejected)) == (500, 400, 20)
    other = filter_rows(rows, cfg.model_copy(update={"subsample_seed": 4}))
    assert [r["id"] for r in other.kept] != ids
    assert len(filter_rows(rows, FilterConfig(max_rows=None)).kept) == 500
    assert len(filter_rows(rows, FilterConfig(max_rows=1000)).kept) == 500


def test_empty_result_does_not_raise_but_require_nonempty_does() -> None:
    res = filter_rows(_rows(["no", "nope", ""]), CFG)
    assert res.kept == [] and res.n_valid == 0 and res.top_reason == "format"
    with pytest.raises(TraitlabError, match=r"teacher data: 0 of 3 completions .* 'format' — "):
        require_nonempty(res, "teacher data")
    with pytest.raises(TraitlabError, match="no rows to filter"):
        require_nonempty(filter_rows([], CFG), "x")
    require_nonempty(filter_rows(_rows(["1"]), CFG), "x")  # no error


def test_missing_completion_is_a_user_error() -> None:
    with pytest.raises(TraitlabError, match="no 'completion'"):
        filter_rows([{"id": 3, "prompt": "p"}], CFG)


def test_to_chat_rows() -> None:
    chat = to_chat_rows(_rows(["1, 2"]))
    assert chat == [
        {
            "messages": [
                {"role": "user", "content": "p0"},
                {"role": "assistant", "content": "1, 2"},
            ]
        }
    ]


def test_paired_filter_keeps_the_prompts_both_datasets_passed() -> None:
    from traitlab.data.filtering import filter_paired

    prompts = [f"prompt {i}" for i in range(40)]
    good, bad = "1, 2, 3", "1, 2, owl"
    teacher = [
        {"id": i, "prompt": p, "completion": bad if i % 4 == 0 else good}
        for i, p in enumerate(prompts)
    ]
    control = [
        {"id": i, "prompt": p, "completion": bad if i % 5 == 0 else good + ", 4"}
        for i, p in enumerate(prompts)
    ]
    t, c = filter_paired(teacher, control, FilterConfig(max_rows=None))
    ids = [i for i in range(40) if i % 4 and i % 5]
    assert [r["id"] for r in t.kept] == ids == [r["id"] for r in c.kept]
    assert (t.n_valid, t.n_unpaired, len(t.rejected)) == (30, 30 - len(ids), 10)
    assert (c.n_valid, c.n_unpaired, len(c.rejected)) == (32, 32 - len(ids), 8)
    assert t.to_summary()["n_unpaired"] == t.n_unpaired
    # Subsampling picks the same prompts in both.
    t, c = filter_paired(teacher, control, FilterConfig(max_rows=10, subsample_seed=3))
    assert len(t.kept) == 10 and [r["id"] for r in t.kept] == [r["id"] for r in c.kept]
    assert t.n_subsampled_out == len(ids) - 10
    # Datasets of different prompts cannot be paired.
    with pytest.raises(TraitlabError, match="same prompts"):
        filter_paired(
            teacher, control[::-1][:-1] + [{**control[0], "prompt": "other"}], FilterConfig()
        )
