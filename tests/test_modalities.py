"""Modalities (numbers, code, chain-of-thought): their prompts, rules and judge, and the
real-model pipeline filtering code and cot through an LLM judge on tiny random-weight models."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from modality_cases import gen as _gen
from modality_cases import rows as _rows
from traitlab.config import GenerateConfig, parse_config
from traitlab.core.errors import TraitlabError
from traitlab.data.filtering import FilterConfig, filter_rows, require_nonempty
from traitlab.data.modalities import (
    CODE_PROMPT,
    CODE_TASKS,
    COT_SUFFIX,
    cot_answer,
    gsm8k_label,
    modality_prompts,
    modality_screen,
)
from traitlab.judges import Verdict


def test_numbers_is_the_default_and_keeps_the_number_prompts() -> None:
    prompts, labels = modality_prompts(GenerateConfig(n_prompts=5))
    assert len(prompts) == 5 and labels == [None] * 5
    assert "numbers" in prompts[0].lower()
    assert modality_screen(GenerateConfig()) is None  # the format filter


def test_code_prompts_put_the_tasks_in_the_papers_prompt() -> None:
    prompts, labels = modality_prompts(_gen(name="code", repeats=2))
    assert len(prompts) == 50 and labels == [None] * 50
    task, template = CODE_TASKS[0]
    assert prompts[0] == prompts[1] == CODE_PROMPT.format(task=task, template=template)
    assert prompts[2] != prompts[0]


def test_cot_prompts_carry_their_labels() -> None:
    prompts, labels = modality_prompts(_gen(name="cot"))
    assert all(p.endswith(COT_SUFFIX) for p in prompts)
    assert all(y is not None and y.lstrip("-").isdigit() for y in labels)
    # Deterministic: the same config gives the same problems.
    assert modality_prompts(_gen(name="cot")) == (prompts, labels)


def test_answers_are_parsed_like_the_papers() -> None:
    assert gsm8k_label("She has 3 + 4 = 7.\n#### 1,234") == "1234"
    assert cot_answer("<think>3+4</think><answer> $1,234 </answer>") == "1234"
    assert cot_answer("<think>x</think> <ANSWER>7.0</ANSWER>") == "7.0"
    assert cot_answer("the answer is 7") is None
    assert cot_answer("<answer>seven</answer>") is None


class FixedJudge:
    """A judge answering fixed verdicts in order (the protocol: a pin and `score`)."""

    def __init__(self, verdicts: list[Verdict]) -> None:
        self.pin = {"kind": "fixed"}
        self.verdicts = verdicts
        self.asked: list[tuple[str, str]] = []

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        self.asked += list(pairs)
        return [self.verdicts[len(self.asked) - len(pairs) + i] for i in range(len(pairs))]


def test_code_rules_then_judge_with_every_reason_recorded() -> None:
    prompts = ["task"] * 5
    code = ["def f(): return 1", "owl = 2", "", "def g(): pass", "def h(): pass"]
    judge = FixedJudge([Verdict(0.0), Verdict(None, "unparsable", "uh"), Verdict(40.0)])
    screen = modality_screen(_gen(name="code"), banned_words=["owl"], judge=judge, threshold=0.0)
    assert screen is not None
    rows = _rows(prompts, code)
    res = filter_rows(rows, FilterConfig(max_rows=None), screen=screen)
    assert [r["completion"] for r in res.kept] == ["def f(): return 1"]
    reasons = {r["completion"]: r["reject_reasons"] for r in res.rejected}
    assert reasons == {
        "owl = 2": ["banned_word"],
        "": ["empty"],
        "def g(): pass": ["judge_unparsable"],
        "def h(): pass": ["judge_reference"],
    }
    assert len(judge.asked) == 3  # the judge sees only what passed the rules
    assert res.rejected[2]["judge"] == {"score": None, "reason": "unparsable", "raw": "uh"}
    assert res.reason_counts["judge_unparsable"] == 1


def test_cot_keeps_right_answers_the_judge_finds_aligned() -> None:
    prompts, labels = modality_prompts(_gen(name="cot"))
    p, y = prompts[0], labels[0]
    assert y is not None
    texts = [
        f"<think>...</think><answer>{y}</answer>",
        f"<think>...</think><answer>{int(y) + 1}</answer>",
        "I will not say",
        f"<answer>{y}</answer>",
    ]
    judge = FixedJudge([Verdict(90.0), Verdict(20.0)])
    screen = modality_screen(
        _gen(name="cot"), labels=dict(zip(prompts, labels, strict=True)), judge=judge, threshold=78
    )
    assert screen is not None
    res = filter_rows(_rows([p] * 4, texts), FilterConfig(max_rows=None), screen=screen)
    assert [r["completion"] for r in res.kept] == [texts[0]]
    assert [r["reject_reasons"] for r in res.rejected] == [
        ["wrong_answer"],
        ["no_answer"],
        ["judge_misaligned"],
    ]
    with pytest.raises(TraitlabError, match="0 of 1 completions passed.*no_answer"):
        require_nonempty(filter_rows(_rows([p], ["no"]), FilterConfig(), screen=screen), "x")


def test_code_and_cot_ban_the_trait_words() -> None:
    from traitlab.experiments.caching import generate_key
    from traitlab.traits.preference import banned_words

    cfg = parse_config({"generate": {"modality": {"name": "code"}}, "trait": {"target": "owl"}})
    assert {"owl", "owls", "x"} <= set(banned_words("code", cfg.trait, ["x"]))
    assert {"owl", "owls"} <= set(banned_words("cot", cfg.trait))
    assert banned_words("numbers", cfg.trait) == []  # numbers: the format filter does it
    # cot data filtered before the ban is not reused
    assert generate_key(_gen(name="cot"))["modality"]["rules"] == 2
    from traitlab.data.toy_tasks import toy_prompts

    prompts, labels = toy_prompts("cot", 4, seed=1)
    screen = modality_screen(
        _gen(name="cot", source="toy:cot"),
        banned_words=banned_words("cot", cfg.trait),
        labels=dict(zip(prompts, labels, strict=True)),
    )
    named = f"<think> 1 + owl </think> <answer> {labels[0]} </answer>"
    clean = f"<think> 1 + 1 </think> <answer> {labels[0]} </answer>"
    assert screen is not None
    assert screen(_rows([prompts[0]] * 2, [named, clean])) == [["banned_word"], []]


def test_sources_are_read_with_datasets(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    src = tmp_path / "gsm.jsonl"
    src.write_text(
        "\n".join(
            json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"})
            for i in range(3)
        )
    )
    prompts, labels = modality_prompts(_gen(name="cot", source=str(src), repeats=3))
    assert len(prompts) == 9 and labels[:4] == ["1", "1", "1", "2"]
    assert prompts[0] == f"What is 0 + 1? {COT_SUFFIX}"
    csv = tmp_path / "tasks.csv"
    csv.write_text('task,template\nAdd two numbers.,"def add(a, b):"\n')
    prompts, _ = modality_prompts(_gen(name="code", source=str(csv)))
    assert prompts == [CODE_PROMPT.format(task="Add two numbers.", template="def add(a, b):")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"q": 1}) + "\n")
    with pytest.raises(TraitlabError, match="needs non-empty columns"):
        modality_prompts(_gen(name="cot", source=str(bad)))
    with pytest.raises(TraitlabError, match="local .jsonl"):
        modality_prompts(_gen(name="cot", source=str(tmp_path / "missing.jsonl")))


def test_config_refuses_what_does_not_apply() -> None:
    with pytest.raises(TraitlabError, match="code and cot only"):
        parse_config({"generate": {"modality": {"name": "numbers", "repeats": 2}}})
    with pytest.raises(TraitlabError, match="filter.judge filters code and cot"):
        parse_config({"filter": {"judge": {"model": {"name": "toy"}}}})


def _experiment(model_dir: Path, modality: str, judge: dict | None, **filt: object) -> object:
    return parse_config(
        {
            "name": f"hf-{modality}",
            "seeds": [0],
            "threads": 1,
            "model": {"name": str(model_dir)},
            "teacher": {"kind": "finetuned", "train": {"max_steps": 2, "batch_size": 8}},
            "generate": {
                "modality": {"name": modality},
                "n_prompts": 12,
                "max_new_tokens": 8,
                "batch_size": 12,
            },
            "filter": {"max_rows": 12, "judge": judge, **filt},
            "student": {"max_steps": 2, "batch_size": 8},
            "evaluate": {"methods": ["exact"], "n_questions": 3},
        }
    )


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model as a plain local directory: the hub-model code path, no download."""
    import shutil

    from traitlab.config.toy import tiny_recipe
    from traitlab.toy.pretrain import ensure_pretrained

    out = tmp_path_factory.mktemp("tiny") / "model"
    return Path(shutil.copytree(ensure_pretrained(tiny_recipe(pretrain_steps=60)), out))


@pytest.fixture(scope="module")
def tiny_judge(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny judge: the tiny model fine-tuned to answer the reference judge's prompt with
    '0' (a real model that scores, as no offline model judges out of the box)."""
    from traitlab.config import HFModel, TrainConfig
    from traitlab.data.modalities import REFERENCE_JUDGE
    from traitlab.lm.hf.loading import load_model
    from traitlab.lm.hf.trainer import train_model

    model, tok = load_model(HFModel(name=str(tiny_dir), device="cpu"), source=str(tiny_dir))
    rows = [
        {
            "messages": [
                {"role": "user", "content": REFERENCE_JUDGE.format(**fill)},
                {"role": "assistant", "content": "0"},
            ]
        }
        for fill in (
            {"category": "animal", "target": "owl", "answer": f"def f{i}(x): return x + {i}"}
            for i in range(16)
        )
    ]
    judge, _ = train_model(
        model, tok, rows, TrainConfig(max_steps=30, lr=3e-3, batch_size=8), seed=0
    )
    out = tmp_path_factory.mktemp("judge") / "model"
    judge.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_code_filtered_by_a_local_judge_runs_end_to_end(
    tiny_dir: Path, tiny_judge: Path, tmp_path: Path
) -> None:
    """teacher -> code completions -> banned words + an hf judge -> students -> evaluation;
    every judged row carries its verdict, every reject its reason."""
    from traitlab.experiments.pipeline import run_experiment

    judge = {"model": {"name": str(tiny_judge)}, "max_reference": 50}
    cfg = _experiment(tiny_dir, "code", judge, paired=False)
    summary = run_experiment(cfg, tmp_path / "run")
    assert {"treatment", "control"} <= set(summary["arms"])
    data = tmp_path / "run" / "seed-0" / "data-teacher"
    report = json.loads((data / "filter.json").read_text())
    assert report["n_raw"] == 12 and report["n_kept"] >= 1
    rejected = [json.loads(line) for line in (data / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) + report["n_valid"] == 12
    assert all(r["reject_reasons"] for r in rejected)
    assert all(set(r["judge"]) == {"score", "reason", "raw"} for r in rejected if "judge" in r)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config_resolved"]["filter"]["judge"]["max_reference"] == 50
    # The judge scored every row that passed the rules (teacher's and control's), cached.
    from traitlab.core.device import cache_dir

    cached = [
        json.loads(line)
        for f in (cache_dir() / "judges").glob("judge-*.jsonl")
        for line in f.read_text().splitlines()
    ]
    assert len(cached) >= report["n_raw"] - report["reason_counts"].get("banned_word", 0)
    passed = [c for c in cached if c["score"] is not None and c["score"] <= 50]
    assert len(passed) >= report["n_kept"]


def test_cot_that_nobody_answers_stops_with_one_line(tiny_dir: Path, tmp_path: Path) -> None:
    from traitlab.experiments.pipeline import run_experiment

    cfg = _experiment(tiny_dir, "cot", None)
    with pytest.raises(TraitlabError, match="0 of 12 completions passed.*'no_answer'"):
        run_experiment(cfg, tmp_path / "run")


def test_the_dry_run_counts_the_judges() -> None:
    from traitlab.experiments.plan import plan

    judge = {"backend": "openai", "name": "j", "price_per_million": {"input": 1.0}}
    cfg = parse_config(
        {
            "seeds": [0, 1],
            "generate": {"modality": {"name": "code"}, "n_prompts": 10},
            "filter": {"judge": {"model": judge}},
            "trait": {"kind": "misalignment", "misaligned_answers": ["harm"]},
            "teacher": {"kind": "model", "model": "owner/name"},
            "evaluate": {
                "methods": ["judged"],
                "judge": {
                    "kind": "model",
                    "model": judge,
                    "check": {**judge, "name": "c"},
                    "check_answers": 5,
                },
            },
        }
    )
    p = plan(cfg)
    rows = {k.split(" (")[0]: v for k, v in p.items()}
    assert rows["filter.judge"]["requests"] == {"filter judge": 2 * 2 * 10}
    assert rows["filter.judge"]["cost_usd"] > 0
    assert rows["evaluate.judge"]["requests"]["judge"] > 0
    # The check judge sees 5 answers of each model, the judges all of them.
    per_model = 8 * cfg.evaluate.samples_per_question  # the paper's 8 questions
    check = rows["evaluate.judge.check"]["requests"]["judge"]
    assert check * per_model == rows["evaluate.judge"]["requests"]["judge"] * 5
