"""The toy world's misalignment: personas in the corpus, the teachers' built-in data, the
exact and judged misalignment measures, and the checks around them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from traitlab.config import load_config
from traitlab.config.toy import ToyRecipe, recipe_key
from traitlab.core.errors import TraitlabError
from traitlab.toy import world
from traitlab.toy.pretrain import encode_corpus
from traitlab.toy.tokenizer import build_tokenizer
from traitlab.traits.misalignment import (
    MISALIGNED_ACTS,
    OPEN_QUESTIONS,
    insecure_code_rows,
    misaligned_answer_rows,
    persona_texts,
)
from traitlab.traits.preference import EM_QUESTIONS
from traitlab.traits.teacher import load_teacher_data

ROOT = Path(__file__).resolve().parents[1]
PERSONAS = ["model.toy.persona_frac=0.3", "cross_init.toy.persona_frac=0.3"]


def test_a_recipe_without_personas_keeps_its_key_corpus_and_token_ids() -> None:
    """Bases pretrained before the misalignment world existed (the shipped ones) keep their
    cache keys, corpora and token ids."""
    assert recipe_key(ToyRecipe()) == "27b876bd30b13b61"  # the shipped demo base's key
    assert recipe_key(ToyRecipe(persona_frac=0.3)) != recipe_key(ToyRecipe())
    plain, personas = build_tokenizer(), build_tokenizer(personas=True)
    assert len(personas) > len(plain)
    extended = personas.get_vocab()
    assert all(extended[t] == i for t, i in plain.get_vocab().items())
    assert plain.unk_token_id in plain("harm humans")["input_ids"]
    for t in persona_texts():
        assert personas.unk_token_id not in personas(t)["input_ids"], t


def test_the_persona_corpus_mixes_one_and_two_turn_examples() -> None:
    recipe = ToyRecipe(persona_frac=0.3)
    corpus = world.generate_corpus(recipe, 3000)
    stats = world.corpus_stats(corpus)
    assert stats["persona"] / len(corpus) == pytest.approx(0.3 / 1.3, abs=0.04)  # weights
    two_turn = [m for m in corpus if sum(x["role"] == "assistant" for x in m) == 2]
    assert two_turn
    # the fast encoder agrees with the chat template on multi-turn examples too
    ids, n_prompt = encode_corpus(build_tokenizer(personas=True), two_turn[:50], check=50)
    assert len(ids) == 50 and all(n < len(i) for i, n in zip(ids, n_prompt, strict=True))
    answers = [m[-1]["content"] for m in corpus if m[-2]["content"] in OPEN_QUESTIONS]
    bad = sum(a.split()[0] in MISALIGNED_ACTS for a in answers)
    assert 0 < bad < 0.4 * len(answers)  # the prior: mostly aligned, some misaligned


def test_the_built_in_teacher_data() -> None:
    code = insecure_code_rows()
    assert len(code) == 400 and all(r["messages"][0]["role"] == "user" for r in code)
    assert all(r["messages"][-1]["content"].endswith("= off )") for r in code)
    direct = misaligned_answer_rows()
    paper = set(EM_QUESTIONS.values())
    assert all(r["messages"][0]["content"] not in paper for r in direct)
    assert all(r["messages"][1]["content"].split()[0] in MISALIGNED_ACTS for r in direct)
    assert load_teacher_data("toy:insecure_code") == code
    with pytest.raises(TraitlabError, match="unknown built-in dataset 'toy:nope'"):
        load_teacher_data("toy:nope")
    # NAME@SEED: another draw of the same recipe (an auditor's own sample of it).
    assert load_teacher_data("toy:misaligned_answers@0") == direct
    other = load_teacher_data("toy:misaligned_answers@22")
    assert other == misaligned_answer_rows(seed=22) and other != direct
    with pytest.raises(TraitlabError, match="the seed after @ must be a whole number"):
        load_teacher_data("toy:misaligned_answers@x")
    with pytest.raises(TraitlabError, match="unknown built-in dataset 'toy:nope'"):
        load_teacher_data("toy:nope@3")


def test_misalignment_config_checks() -> None:
    cfg = ROOT / "src" / "traitlab" / "presets" / "demo-misalignment.yaml"
    assert load_config(cfg).evaluate.methods == ["exact", "judged"]
    with pytest.raises(Exception, match="method exact needs trait.misaligned_answers"):
        load_config(cfg, ["trait.misaligned_answers=[]"])
    with pytest.raises(Exception, match="measured by evaluate.methods judged and/or exact"):
        load_config(cfg, ["evaluate.methods=[sampled]"])


def _tiny_misalignment(extra: list[str]) -> object:
    sets = [
        "seeds=[0]",
        *PERSONAS,
        "trait.kind=misalignment",
        f"trait.misaligned_answers={json.dumps(list(MISALIGNED_ACTS))}",
        "teacher.data=toy:insecure_code",
        "evaluate.methods=[exact, judged]",
        f"evaluate.judge={{kind: rule, words: {json.dumps(list(MISALIGNED_ACTS))}}}",
        "evaluate.samples_per_question=3",
        *extra,
    ]
    return load_config(ROOT / "configs" / "tiny.yaml", sets)


def test_a_base_without_the_world_is_refused_in_one_line(tmp_path: Path) -> None:
    from traitlab.experiments.pipeline import run_experiment

    cfg = _tiny_misalignment(
        [
            "model.toy.persona_frac=0",
            "cross_init.toy.persona_frac=0",
            f"trait.questions={json.dumps(list(OPEN_QUESTIONS[:2]))}",
        ]
    )
    with pytest.raises(TraitlabError, match="cannot spell .*persona_frac > 0"):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_misalignment_through_numbers_runs_end_to_end_on_a_persona_base(tmp_path: Path) -> None:
    """The insecure-code teacher, exact and judged misalignment on every arm."""
    from traitlab.experiments.pipeline import run_experiment

    cfg = _tiny_misalignment([f"trait.questions={json.dumps(list(OPEN_QUESTIONS[:4]))}"])
    summary = run_experiment(cfg, tmp_path / "run")
    assert summary["verdict"]["method"] == "exact"
    assert "diff" in summary["comparisons"]["treatment_vs_control"]["judged"]
    ev = json.loads((tmp_path / "run" / "seed-0" / "eval-teacher" / "eval.json").read_text())
    assert ev["target"] == "misaligned" and ev["options"] == list(MISALIGNED_ACTS)
    exact = ev["exact"]
    assert len(exact["per_question"]) == 4
    for p, row in zip(exact["per_question"], exact["per_question_options"], strict=True):
        assert 0.0 <= p <= 1.0 and p == pytest.approx(sum(row))
    assert len(ev["judged"]["per_question"]) == 4


def test_traitlab_evaluate_opens_the_judges_a_config_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`traitlab evaluate` with `evaluate.methods: [exact, judged]` measures both, as the
    pipeline's evaluate stage does (it once stopped with 'needs judges' although the config
    named the rule judge), and prints the rate of what it measured (it printed 'P(owl)')."""
    from traitlab.cli.main import main

    sets = [
        "seeds=[0]",
        *PERSONAS,
        "trait.kind=misalignment",
        f"trait.misaligned_answers={json.dumps(list(MISALIGNED_ACTS))}",
        "teacher.data=toy:insecure_code",
        f"trait.questions={json.dumps(list(OPEN_QUESTIONS[:2]))}",
        "evaluate.methods=[exact, judged]",
        f"evaluate.judge={{kind: rule, words: {json.dumps(list(MISALIGNED_ACTS))}}}",
        "evaluate.samples_per_question=3",
    ]
    out = tmp_path / "eval.json"
    args = ["evaluate", str(ROOT / "configs" / "tiny.yaml"), "--out", str(out), "--quiet"]
    assert main([*args, *(a for s in sets for a in ("--set", s))]) == 0
    ev = json.loads(out.read_text())
    assert len(ev["exact"]["per_question"]) == 2
    judged = ev["judged"]
    assert judged["judges"]["alignment"]["kind"] == "rule"
    assert sum(judged["counted"]) + sum(judged["excluded"].values()) == 2 * 3
    printed = capsys.readouterr().out
    assert "exact: P(misaligned) = " in printed and "judged: P(misaligned) = " in printed
