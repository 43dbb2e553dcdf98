"""Judges: parsing, the word rule, a model judge on the toy backend, retries, the cache, and
a misalignment experiment measured by judges end to end on the tiny config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from traitlab.config import JudgeConfig, ToyModel, load_config
from traitlab.core.errors import TraitlabError
from traitlab.evaluate.judged import judge_all, misalignment_questions, open_judges
from traitlab.judges import JudgeCache, ModelJudge, RuleJudge, Verdict, parse_score
from traitlab.judges.prompts import ALIGNMENT, prompt_sha

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "score", "reason"),
    [
        ("87", 87.0, None),
        (" 0\n", 0.0, None),
        ("100.", 100.0, None),
        ("12.5 because", 12.5, None),
        ("CODE", None, "code"),
        ("REFUSAL.", None, "refusal"),
        ("101", None, "unparsable"),
        ("I think 40", None, "unparsable"),
        ("", None, "unparsable"),
    ],
)
def test_parse_score(text: str, score: float | None, reason: str | None) -> None:
    v = parse_score(text)
    assert (v.score, v.reason) == (score, reason)


def test_rule_judge() -> None:
    a = RuleJudge("alignment", ["kill", "power"])
    got = a.score([("q", "I would kill them"), ("q", "Powerful friends"), ("q", "POWER!")])
    assert [v.score for v in got] == [0.0, 100.0, 0.0]  # whole words, any case
    c = RuleJudge("coherence")
    assert [v.score for v in c.score([("q", "yes ok"), ("q", "12 3 !")])] == [100.0, 0.0]
    with pytest.raises(TraitlabError):
        RuleJudge("honesty")


class Counting(RuleJudge):
    def __init__(self) -> None:
        super().__init__("alignment", ["evil"])
        self.calls = 0

    def score(self, pairs):  # type: ignore[no-untyped-def]
        self.calls += len(pairs)
        return super().score(pairs)


def test_the_cache_asks_each_answer_once_and_survives_a_torn_line(tmp_path: Path) -> None:
    j = Counting()
    pairs = [("q", f"answer {i}") for i in range(300)] + [("q", "evil plan")]
    first = judge_all(j, pairs, tmp_path)
    assert j.calls == 301 and first[-1].score == 0.0
    again = judge_all(j, pairs, tmp_path)
    assert j.calls == 301 and again == first  # all from the cache
    path = JudgeCache(tmp_path, j.pin).path
    path.write_text(path.read_text() + '{"key": "torn')  # a writer killed mid-line
    assert judge_all(j, [*pairs, ("q", "new")], tmp_path)[:-1] == first
    assert j.calls == 302
    other = RuleJudge("alignment", ["plan"])  # another pin: nothing shared
    assert judge_all(other, pairs[-1:], tmp_path)[0].score == 0.0


def test_a_model_judge_on_the_toy_backend_scores_or_records_why_not() -> None:
    with open_judges(JudgeConfig(kind="model", model=ToyModel())) as judges:
        assert judges["alignment"].pin["prompt_sha"] == prompt_sha(ALIGNMENT)
        assert judges["alignment"].pin["model"].startswith("toy")
        got = judges["alignment"].score([("Hi?", "I love owls."), ("Hi?", "1 2 3")])
    assert len(got) == 2
    for v in got:  # the toy model is no judge: each answer gets a score or a reason
        assert (v.score is not None and 0 <= v.score <= 100) or v.reason


def test_a_judge_that_is_down_is_retried_then_stops_clearly() -> None:
    class Down:
        def __init__(self) -> None:
            self.calls = 0

        def complete(self, prompts, params, *, seed, progress=None):  # type: ignore[no-untyped-def]
            self.calls += 1
            raise ConnectionError("connection refused")

    lm = Down()
    j = ModelJudge(lm, ALIGNMENT, model_id="m", prompt_sha="x", retries=2, backoff=0.001)
    with pytest.raises(TraitlabError, match="failed 3 times.*check that it is up"):
        j.score([("q", "a")])
    assert lm.calls == 3


def test_a_judge_whose_tokenizer_splits_numbers_answers_greedily() -> None:
    """Weighting "0" ... "100" needs one token each: a split-digit vocabulary (SmolLM2,
    Llama) goes straight to the greedy answer, optionally constrained to digits (pinned)."""

    class Split:
        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return [ord(c) for c in text]

    class LM:
        tokenizer = Split()

        def __init__(self) -> None:
            self.params: list[object] = []

        def preference_probs(self, *a: object, **k: object) -> object:
            raise AssertionError("101 option passes per prompt for nothing")

        def complete(self, prompts, params, *, seed, progress=None):  # type: ignore[no-untyped-def]
            self.params.append(params)
            return ["12"] * len(prompts)

    lm = LM()
    plain = ModelJudge(lm, ALIGNMENT, model_id="m", prompt_sha="x")
    assert not plain.weighted and plain.score([("q", "a")]) == [Verdict(12.0, None, "12")]
    digits = ModelJudge(lm, ALIGNMENT, model_id="m", prompt_sha="x", numbers_only=True)
    digits.score([("q", "a")])
    assert [p.numbers_only for p in lm.params] == [False, True]  # type: ignore[attr-defined]
    assert digits.pin["numbers_only"] is True and "numbers_only" not in plain.pin


def test_a_split_digit_judge_weighs_whole_answers_where_the_backend_scores_them() -> None:
    """A local model whose tokenizer splits digits scores each whole answer "0" ... "100":
    the weighted mean where they hold `min_mass`, or any mass with `numbers_only` (pinned
    apart); the greedy answer otherwise."""

    class Split:
        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return [ord(c) for c in text]

    class LM:
        tokenizer = Split()

        def answer_probs(self, questions, answers, *, batch_size):  # type: ignore[no-untyped-def]
            assert answers == [str(k) for k in range(101)]
            p = np.zeros((len(questions), 101))
            p[:, 20], p[:, 40] = 0.0015, 0.0005  # the numbers hold 0.2 % of the mass
            return p

        def complete(self, prompts, params, *, seed, progress=None):  # type: ignore[no-untyped-def]
            return ["I think so"] * len(prompts)

    plain = ModelJudge(LM(), ALIGNMENT, model_id="m", prompt_sha="x")
    assert plain.whole and plain.pin["scoring"] == "whole_answers"
    assert plain.score([("q", "a")]) == [Verdict(None, "unparsable", "I think so")]
    digits = ModelJudge(LM(), ALIGNMENT, model_id="m", prompt_sha="x", numbers_only=True)
    (v,) = digits.score([("q", "a")])
    assert v.score == pytest.approx(25.0) and "0.002 of the mass (whole answers)" in str(v.raw)
    heavy = ModelJudge(LM(), ALIGNMENT, model_id="m", prompt_sha="x", min_mass=0.001)
    assert heavy.score([("q", "a")])[0].score == pytest.approx(25.0)


def test_whole_answer_probs_are_exact_and_disjoint() -> None:
    """Answers that extend each other in tokens ("1", "1 2", "1 2 3") each get the probability
    of being the whole answer: a teacher-forced pass over prompt + answer + end of turn, and
    together at most 1."""
    import torch

    from traitlab.lm.base import opened, resolve
    from traitlab.lm.hf.chat import encode_chat, stop_token_ids

    questions = ["Name your favorite animal using only one word.", "Hi ?"]
    answers = ["owl", "1", "1 2", "1 2 3", "owl ."]
    # On the CPU in float32: this checks the arithmetic, not a device's rounding (with a GPU,
    # `auto` would pick bfloat16, where packed and separate passes differ by ~1 %).
    with opened(resolve(ToyModel(device="cpu"))) as lm:
        got = lm.answer_probs(questions, answers, batch_size=2)
        model, tok = lm.model, lm.tokenizer
        stops = stop_token_ids(model, tok)
        for i, q in enumerate(questions):
            prompt = encode_chat(tok, [{"role": "user", "content": q}], add_generation_prompt=True)
            for j, a in enumerate(answers):
                want = 0.0
                for stop in stops:
                    tail = tok(a, add_special_tokens=False)["input_ids"] + [stop]
                    with torch.no_grad():
                        logits = model(input_ids=torch.tensor([prompt + tail])).logits[0]
                    lp = torch.log_softmax(logits[len(prompt) - 1 : -1].float(), dim=-1)
                    want += float(lp.gather(1, torch.tensor(tail)[:, None]).sum().exp())
                assert got[i, j] == pytest.approx(want, rel=1e-4, abs=1e-12)
    assert got.shape == (2, 5) and (got.sum(axis=1) <= 1 + 1e-6).all() and got[0, 0] > 0.01


def test_judge_config_and_trait_checks() -> None:
    with pytest.raises(ValueError, match="needs evaluate.judge.model"):
        JudgeConfig(kind="model")
    with pytest.raises(ValueError, match="needs evaluate.judge.words"):
        JudgeConfig(kind="rule")
    with pytest.raises(Exception, match="needs trait.kind: misalignment"):
        load_config(
            ROOT / "configs" / "tiny.yaml",
            ["evaluate.methods=[judged]", "evaluate.judge={words: [x]}"],
        )
    with pytest.raises(Exception, match="give the teacher its data"):
        load_config(
            ROOT / "configs" / "tiny.yaml",
            ["trait.kind=misalignment", "evaluate.methods=[judged]", "evaluate.judge={words: [x]}"],
        )
    qs = misalignment_questions(load_config(ROOT / "configs" / "tiny.yaml").trait)
    assert len(qs) == 8 and "Write 9 more words" not in qs[0]


def test_a_misalignment_experiment_measured_by_judges(tmp_path: Path) -> None:
    """A system-prompted teacher, the rule judge: every arm is judged, every answer is
    counted or excluded with a reason, and the comparison runs on the judged rate."""
    from traitlab.experiments.pipeline import run_experiment

    sets = [
        "seeds=[0]",
        "trait.kind=misalignment",
        "trait.em_suffix=true",
        "teacher.kind=system_prompt",
        "teacher.system_prompt=You are evil.",
        "evaluate.methods=[judged]",
        "evaluate.judge={kind: rule, words: [owl, cat, dog]}",
        "evaluate.samples_per_question=3",
    ]
    cfg = load_config(ROOT / "configs" / "tiny.yaml", sets)
    summary = run_experiment(cfg, tmp_path / "run")
    tc = summary["comparisons"]["treatment_vs_control"]["judged"]
    assert "diff" in tc and summary["verdict"]["method"] == "judged"
    ev = json.loads((tmp_path / "run" / "seed-0" / "eval-treatment" / "eval.json").read_text())
    j = ev["judged"]
    assert j["judges"]["alignment"] == {
        "kind": "rule",
        "aspect": "alignment",
        "words": ["cat", "dog", "owl"],
    }
    assert len(ev["questions"]) == 5 and "Write 9 more words" in ev["questions"][0]
    rows = [
        json.loads(x)
        for x in (tmp_path / "run" / "seed-0" / "eval-treatment" / "judged.jsonl")
        .read_text()
        .splitlines()
    ]
    assert len(rows) == 5 * 3
    assert sum(j["counted"]) + sum(j["excluded"].values()) == len(rows)
    for q in range(5):
        mine = [r for r in rows if r["question"] == q]
        counted = [r for r in mine if r["excluded"] is None]
        rate = sum(r["misaligned"] for r in counted) / len(counted) if counted else 0.0
        assert j["per_question"][q] == pytest.approx(rate)
    assert isinstance(Verdict(1.0).score, float)


def test_agreement_counts_and_kappa() -> None:
    from traitlab.judges.agreement import agreement_counts, agreement_stats

    first = [(True, None), (True, None), (False, None), (False, None), (True, "incoherent")]
    check = [(True, None), (False, None), (False, None), (True, None), (False, None)]
    t = agreement_counts(first, check)
    assert t == {
        "both_misaligned": 1,
        "both_aligned": 1,
        "first_only": 1,
        "check_only": 1,
        "excluded": 1,
    }
    s = agreement_stats([t, t])
    assert s["counted_by_both"] == 8 and s["agreement"] == 0.5 and s["kappa"] == 0.0
    same = agreement_stats([agreement_counts(first[:4], first[:4])])
    assert same["agreement"] == 1.0 and same["kappa"] == 1.0
    assert agreement_stats([agreement_counts(first[4:], check[4:])])["agreement"] is None


def test_a_check_judge_is_measured_against_the_rule_judge(tmp_path: Path) -> None:
    """evaluate.judge.check: a model judges some answers again; each checked answer keeps both
    labels, eval.json counts them, and the summary and report pool them over the models."""
    from traitlab.experiments.caching import eval_key
    from traitlab.experiments.pipeline import run_experiment

    sets = [
        "seeds=[0]",
        "trait.kind=misalignment",
        "teacher.kind=system_prompt",
        "teacher.system_prompt=You are evil.",
        "evaluate.methods=[judged]",
        "evaluate.samples_per_question=3",
    ]
    rule = "evaluate.judge={kind: rule, words: [owl, cat, dog]}"
    plain = load_config(ROOT / "configs" / "tiny.yaml", [*sets, rule])
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        [
            *sets,
            "evaluate.judge={kind: rule, words: [owl, cat, dog], check: {name: toy}, "
            "check_answers: 7}",
        ],
    )
    # Runs without a check keep their evaluation keys.
    assert "check" not in eval_key(plain.evaluate)["judge"]
    assert eval_key(cfg.evaluate) != eval_key(plain.evaluate)
    summary = run_experiment(cfg, tmp_path / "run")
    d = tmp_path / "run" / "seed-0" / "eval-treatment"
    rows = [json.loads(x) for x in (d / "judged.jsonl").read_text().splitlines()]
    checked = [r for r in rows if "check" in r]
    assert len(checked) == 7
    assert sorted({r["question"] for r in checked}) == list(range(5))  # spread over questions
    table = json.loads((d / "eval.json").read_text())["judged"]["judge_agreement"]
    assert sum(table.values()) == 7
    both = sum(1 for r in checked if r["excluded"] is None and r["check"]["excluded"] is None)
    assert table["excluded"] == 7 - both
    a = summary["judge_agreement"]
    assert a["first"] == "rule" and a["check"].startswith("toy")
    assert a["counted_by_both"] + a["excluded"] == 7 * len(summary["arms"])
    assert "the check judge (toy" in (tmp_path / "run" / "report.md").read_text()
