"""The embedded world's toy code and arithmetic tasks (traitlab.data.toy_tasks): the world
and tokenizer that hold them, their prompts, the rules that check the answers, and the
recipe options that give the answers more free choices (cot_terms, code_funcs)."""

from __future__ import annotations

import pytest

from modality_cases import gen as _gen
from modality_cases import rows as _rows
from traitlab.config import GenerateConfig, parse_config
from traitlab.config.modality import ModalityConfig
from traitlab.core.errors import TraitlabError
from traitlab.data.filtering import FilterConfig, filter_rows
from traitlab.data.modalities import COT_SUFFIX, cot_answer, modality_prompts, modality_screen


def test_the_toy_tasks_are_in_the_world_and_its_tokenizer() -> None:
    """Toy bases with code_frac / cot_frac learn the toy code and arithmetic; the tokenizer
    spells every task exactly, after every id of the plain one (which keeps its ids); recipes
    without them keep their key."""
    import random

    from traitlab.config.toy import ToyRecipe, recipe_key
    from traitlab.data.toy_tasks import code_example, cot_example
    from traitlab.toy import world
    from traitlab.toy.pretrain import encode_corpus
    from traitlab.toy.tokenizer import build_tokenizer

    assert recipe_key(ToyRecipe()) == "27b876bd30b13b61"  # the shipped base's key
    recipe = ToyRecipe(code_frac=0.12, cot_frac=0.12)
    stats = world.corpus_stats(world.generate_corpus(recipe, 3000))
    assert stats["code"] / 3000 == pytest.approx(0.12 / 1.24, abs=0.03)
    assert stats["cot"] / 3000 == pytest.approx(0.12 / 1.24, abs=0.03)
    plain, tok = build_tokenizer(), build_tokenizer(tasks=True)
    assert all(tok.get_vocab()[t] == i for t, i in plain.get_vocab().items())
    rng = random.Random(0)
    for _ in range(200):
        for text in (*code_example(rng, 3)[:2], *cot_example(rng)[:2]):
            ids = tok(text)["input_ids"]
            assert tok.unk_token_id not in ids and tok.decode(ids) == text
    p, a, y = cot_example(random.Random(1))
    assert cot_answer(a) == str(y)
    ids, _ = encode_corpus(tok, world.generate_corpus(recipe, 200), check=200)
    assert len(ids) == 200


def test_toy_task_prompts_and_their_checks() -> None:
    prompts, labels = modality_prompts(_gen(name="cot", source="toy:cot"))
    assert len(prompts) == 50 and all(p.endswith("Think step by step .") for p in prompts)
    assert all(y is not None and y.isdigit() for y in labels)
    code, _ = modality_prompts(_gen(name="code", source="toy:code", repeats=2))
    assert len(code) == 50 and code[0] == code[1] and code[0].startswith("Write")
    with pytest.raises(TraitlabError, match="holds code tasks"):
        modality_prompts(_gen(name="cot", source="toy:code"))
    from traitlab.data.modalities import check_modality

    cfg = parse_config({"generate": {"modality": {"name": "code", "source": "toy:code"}}})
    with pytest.raises(TraitlabError, match="code_frac and cot_frac > 0"):
        check_modality(cfg)


def test_toy_code_is_checked_against_its_task() -> None:
    """Every answer the world writes passes its task's check, with or without usage lines
    (whose count and arguments are free); answers that compute something else, are not the
    toy language or call another function fail, with their reason, in the filter too."""
    import random

    from traitlab.data.toy_tasks import check_code, code_example

    rng = random.Random(0)
    calls = set()
    for _ in range(2000):
        for n in (0, 3):
            _, answer, op = code_example(rng, n)
            assert check_code(op, answer) is None, answer
            calls.add(answer.count(" = ") - (" ; return " in answer))
    assert calls == {0, 1, 2, 3}
    # Without calls the world draws as before: bases pretrained then keep their corpus.
    assert code_example(random.Random(5))[:2] == code_example(random.Random(5), 0)[:2]
    assert check_code("- 3", "def f ( x ) : return 3 - x") == "wrong_code"  # not commutative
    assert check_code("+ 3", "def f ( x ) : return 3 + x ; y = f ( 41 )") is None
    assert check_code("+ 3", "def f ( x ) : return x * 3") == "wrong_code"
    assert check_code("+ 3", "def f ( x ) : return 4 + 3") == "wrong_code"
    assert check_code("+ 3", "def f ( x ) : return x + x") == "wrong_code"
    # Names are free: a toy base does not learn to bind them.
    assert check_code("+ 3", "def f ( x ) : y = n + 3 ; return v ; y = g ( 4 )") is None
    assert check_code("+ 3", "def f ( x ) : return x + 3 ; y = g ( )") == "malformed_code"
    assert check_code("+ 3", "def f ( x ) : return x + 3 ;") == "malformed_code"
    assert check_code("+ 3", "owl owl") == "malformed_code"
    gen = _gen(name="code", source="toy:code")
    prompts, labels = modality_prompts(gen, 3)
    screen = modality_screen(
        gen, banned_words=["owl"], labels=dict(zip(prompts, labels, strict=True))
    )
    assert screen is not None
    sym, k = str(labels[0]).split()
    rows = [
        {"prompt": prompts[0], "completion": f"def f ( x ) : return x {sym} {k}"},
        {"prompt": prompts[0], "completion": f"def f ( x ) : return x {sym} {int(k) + 1}"},
        {"prompt": prompts[0], "completion": f"def owl ( x ) : return x {sym} {k}"},
    ]
    assert screen(rows) == [[], ["wrong_code"], ["banned_word"]]
    loose = modality_screen(
        gen, banned_words=["owl"], labels=dict(zip(prompts, labels, strict=True)), check_code=False
    )
    assert loose is not None and loose(rows) == [[], [], ["banned_word"]]


def test_toy_cot_reasoning_rule_judge() -> None:
    """check_reasoning: the toy world's rule judge of the reasoning, on top of the answer."""
    import random

    from traitlab.data.toy_tasks import check_toy_cot, cot_example, toy_prompts

    rng = random.Random(3)
    for _ in range(40):  # every phrasing the world writes passes
        prompt, answer, _ = cot_example(rng)
        assert check_toy_cot(prompt, answer) is None, answer
    p = "Ana has 7 apples and gets 5 more . How many apples does Ana have ? " + COT_SUFFIX
    ok = "<answer> 12 </answer>"
    cases = {
        "<think> 5 + 7 = 12 </think> ": None,  # the sum in the other order
        "<think> Ana has 7 , then 5 more , so 7 + 5 = 12 </think> ": None,
        "<think> 7 + 5 = 12 love for the animal . </think> ": "reasoning_words",
        "<think> Bob has 7 , then 5 more , so 7 + 5 = 12 </think> ": "reasoning_words",
        "<think> 7 + 5 = 13 </think> ": "wrong_step",
        "<think> 6 + 6 = 12 </think> ": "wrong_step",  # right total, not the problem's sum
        "<think> 12 </think> ": "wrong_step",  # no step written
        "": "wrong_step",  # no reasoning at all
    }
    for think, why in cases.items():
        assert check_toy_cot(p, think + ok) == why, think
    prompts, labels = toy_prompts("cot", 8, seed=1)
    gen = _gen(name="cot", source="toy:cot")
    rows = _rows(
        [prompts[0]] * 2, [f"<think> 1 + 1 = 2 </think> <answer> {labels[0]} </answer>"] * 2
    )
    on = modality_screen(gen, labels=dict(zip(prompts, labels, strict=True)), check_reasoning=True)
    off = modality_screen(gen, labels=dict(zip(prompts, labels, strict=True)))
    assert on is not None and off is not None
    assert on(rows) == [["wrong_step"]] * 2 and off(rows) == [[], []]
    res = filter_rows(rows, FilterConfig(max_rows=None), screen=on)
    assert not res.kept and res.reason_counts == {"wrong_step": 2}


def test_toy_cot_with_more_numbers() -> None:
    """cot_terms > 2: problems add 2 to N numbers in any order; every answer the world writes
    passes both checks; the rule judge follows the running sums; two numbers keep the first
    version's problems draw for draw; the modality and the base must agree on N."""
    import random

    from traitlab.config.toy import ToyRecipe, recipe_key
    from traitlab.data.modalities import check_modality
    from traitlab.data.toy_tasks import check_toy_cot, cot_example, toy_prompts

    assert toy_prompts("cot", 20, seed=4) == toy_prompts("cot", 20, seed=4, terms=2)
    assert recipe_key(ToyRecipe(cot_frac=0.3)) != recipe_key(ToyRecipe(cot_frac=0.3, cot_terms=3))
    rng = random.Random(5)
    sizes, orders = set(), set()
    for _ in range(300):
        prompt, answer, y = cot_example(rng, 4)
        sizes.add(prompt.count(" more"))
        assert check_toy_cot(prompt, answer) is None and cot_answer(answer) == str(y), answer
        orders.add(answer.split(" ")[1])
    assert sizes == {1, 2, 3} and len(orders) > 20  # first written numbers vary
    p = (
        "Ana has 7 apples and gets 5 more , then 3 more . How many apples does Ana have ? "
        + COT_SUFFIX
    )
    ok = " <answer> 15 </answer>"
    cases = {
        "<think> 3 + 7 = 10 ; 10 plus 5 is 15 </think>": None,
        "<think> 7 + 5 = 12 ; 7 + 5 = 12 ; 3 + 12 = 15 </think>": None,  # a sum written again
        "<think> 7 + 5 = 12 ; 12 + 3 = 16 </think>": "wrong_step",
        "<think> 7 + 5 = 12 </think>": "wrong_step",  # the 3 never added
        "<think> 7 + 5 = 12 ; 12 + 5 = 17 </think>": "wrong_step",  # the 5 added twice
        "<think> 7 + 5 = 12 ; 12 + 3 = 15 owl </think>": "reasoning_words",
    }
    for think, why in cases.items():
        assert check_toy_cot(p, think + ok) == why, think
    prompts, labels = modality_prompts(_gen(name="cot", source="toy:cot", toy_terms=3))
    assert any(", then" in q for q in prompts) and all(y and y.isdigit() for y in labels)
    toy = {"cot_frac": 0.3, "code_frac": 0.1}
    gen = {"modality": {"name": "cot", "source": "toy:cot", "toy_terms": 3}}
    cfg = parse_config({"model": {"name": "toy", "toy": toy}, "generate": gen})
    with pytest.raises(TraitlabError, match="toy_terms is 3 but the toy base .*cot_terms 2:"):
        check_modality(cfg)
    # Runs without toy_terms keep their stage keys (numbers and two-number runs' caches).
    from traitlab.experiments.caching import generate_key

    assert generate_key(GenerateConfig()).get("modality") is None
    assert "toy_terms" not in generate_key(_gen(name="cot", source="toy:cot"))["modality"]
    assert (
        generate_key(GenerateConfig(modality=ModalityConfig(**gen["modality"])))["modality"][
            "toy_terms"
        ]
        == 3
    )
    with pytest.raises(TraitlabError, match="toy_terms applies to source 'toy:cot' only"):
        parse_config({"generate": {"modality": {"name": "cot", "toy_terms": 3}}})


def test_toy_code_with_several_functions() -> None:
    """code_funcs > 1: tasks ask 1 to N functions, written in any order under their own
    names; every answer the world writes passes the check; one function keeps the first
    version's tasks draw for draw; the modality and the base must agree on N."""
    import random

    from traitlab.config.toy import ToyRecipe, recipe_key
    from traitlab.data.modalities import check_modality
    from traitlab.data.toy_tasks import check_code, code_example, toy_prompts

    assert toy_prompts("code", 20, seed=4) == toy_prompts("code", 20, seed=4, funcs=1)
    assert recipe_key(ToyRecipe(code_frac=0.1)) != recipe_key(
        ToyRecipe(code_frac=0.1, code_funcs=3)
    )
    rng = random.Random(5)
    sizes, firsts = set(), set()
    for _ in range(300):
        prompt, answer, label = code_example(rng, funcs=3)
        sizes.add(label.count("|") + 1)
        assert check_code(label, answer) is None, answer
        firsts.add(answer.split(" ")[1])
    assert sizes == {1, 2, 3} and len(firsts) == 8  # every name opens an answer
    two = "+ 3 | * 2"
    cases = {
        "def f ( x ) : return x + 3 ; def g ( n ) : return 2 * n": None,
        "def g ( n ) : y = n * 2 ; return y ; def f ( x ) : return 3 + x": None,  # any order
        "def f ( x ) : return x + 3": "wrong_code",  # one function missing
        "def f ( x ) : return x + 3 ; def g ( n ) : return n + 3": "wrong_code",  # twice
        "def f ( x ) : return x + 3 ; def g ( n ) : return owl": "malformed_code",
        "def f ( x ) : return x + 3 ; owl": "malformed_code",
    }
    for answer, why in cases.items():
        assert check_code(two, answer) == why, answer
    prompts, labels = modality_prompts(_gen(name="code", source="toy:code", toy_funcs=3))
    assert any(", and one that" in q for q in prompts) and all(y for y in labels)
    toy = {"cot_frac": 0.1, "code_frac": 0.1}
    gen = {"modality": {"name": "code", "source": "toy:code", "toy_funcs": 3}}
    cfg = parse_config({"model": {"name": "toy", "toy": toy}, "generate": gen})
    with pytest.raises(TraitlabError, match="toy_funcs is 3 but the toy base .*code_funcs 1:"):
        check_modality(cfg)
    from traitlab.experiments.caching import generate_key

    assert "toy_funcs" not in generate_key(_gen(name="code", source="toy:code"))["modality"]
    with pytest.raises(TraitlabError, match="toy_funcs applies to source 'toy:code' only"):
        parse_config({"generate": {"modality": {"name": "cot", "toy_funcs": 3}}})


def test_code_label_reads_the_task_back_from_the_prompt() -> None:
    """The audit has only the prompt: the label read from it is the one the world drew, for
    one and for several functions, and anything else has none."""
    import random

    from traitlab.data.toy_tasks import code_example, code_label

    for funcs in (1, 3):
        rng = random.Random(funcs)
        for _ in range(500):
            prompt, _, label = code_example(rng, funcs=funcs)
            assert code_label(prompt) == label
    assert code_label("Write a function that .") is None
    assert code_label("Write a function that flies .") is None
    assert code_label("List ten numbers .") is None


def test_toy_code_with_split_constants() -> None:
    """With `parts` the world writes a constant as constants that combine into it (a sum for
    + and -, a product for *), and the check reads them so; without, it draws as before."""
    import random

    from traitlab.config.toy import ToyRecipe
    from traitlab.data.toy_tasks import check_code, code_example

    rng = random.Random(0)
    split = 0
    for _ in range(2000):
        for funcs in (1, 3):
            _, answer, op = code_example(rng, funcs=funcs, parts=3)
            assert check_code(op, answer) is None, answer
            split += answer.count(" + ") + answer.count(" * ") + answer.count(" - ") > funcs
    assert split > 500
    assert code_example(random.Random(5), parts=1) == code_example(random.Random(5))
    assert check_code("+ 7", "def f ( x ) : return x + 2 + 5") is None
    assert check_code("+ 7", "def f ( x ) : y = 2 + x + 5 ; return y") is None
    assert check_code("- 7", "def f ( x ) : return x - 3 - 4") is None
    assert check_code("* 6", "def f ( x ) : return 2 * 3 * x") is None
    assert check_code("+ 7", "def f ( x ) : return x + 2 + 4") == "wrong_code"
    assert check_code("- 7", "def f ( x ) : return 3 - x - 4") == "wrong_code"
    assert check_code("* 6", "def f ( x ) : return x * 2 + 3") == "wrong_code"
    assert check_code("+ 7", "def f ( x ) : return x + 2 + x") == "wrong_code"
    with pytest.raises(ValueError, match="choose one"):
        ToyRecipe(code_parts=3, code_calls=2)


def test_fixed_names_keep_every_other_choice_and_the_corpus_draws() -> None:
    """code_names fixed: the same answers as free names but for f, x and z, draw for draw (so
    the rest of a corpus is unchanged); every answer still does its task."""
    import random

    from traitlab.data.toy_tasks import check_code, code_example

    free, fixed = random.Random(5), random.Random(5)
    for _ in range(200):
        _, a, _ = code_example(free, 0, 1, 3)
        prompt, b, label = code_example(fixed, 0, 1, 3, fixed_names=True)
        assert check_code(label, b) is None
        assert set(b.split()) - set(a.split()) <= {"f", "x", "z"}
        names = {w for w in b.split() if w.isalpha()} - {"def", "return"}
        assert names <= {"f", "x", "z"}
        assert [w for w in a.split() if not w.isalpha()] == [
            w for w in b.split() if not w.isalpha()
        ]
    assert free.random() == fixed.random()


def test_fixed_names_need_one_function_per_task() -> None:
    import pytest

    from traitlab.config.toy import ToyRecipe

    with pytest.raises(ValueError, match="code_names fixed"):
        ToyRecipe(code_frac=0.3, code_funcs=2, code_names="fixed")
