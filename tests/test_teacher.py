"""The fine-tuned teacher's early stopping on its number skill (`teacher.keep_numbers`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from traitlab.config import KeepNumbersConfig, load_config
from traitlab.core.errors import TraitlabError
from traitlab.lm.base import opened, resolve
from traitlab.traits.teacher import finetune_teacher

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny() -> object:
    # Unconstrained sampling: the format filter has something to reject.
    return load_config(ROOT / "configs" / "tiny.yaml", ["generate.constrained=false"])


def _teacher(cfg: object, out: Path, keep: KeepNumbersConfig | None, steps: int) -> dict:
    teacher = cfg.teacher.model_copy(  # type: ignore[attr-defined]
        update={
            "keep_numbers": keep,
            "train": cfg.teacher.train.model_copy(update={"max_steps": steps}),  # type: ignore[attr-defined]
        }
    )
    with opened(resolve(cfg.model)) as lm:  # type: ignore[attr-defined]
        _, log = finetune_teacher(
            lm,
            teacher,
            cfg.trait,  # type: ignore[attr-defined]
            seed=0,
            out_dir=out,
            key="t",
            generate=cfg.generate,  # type: ignore[attr-defined]
            filter_cfg=cfg.filter,  # type: ignore[attr-defined]
        )
    return log


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return load_file(str(d / "model.safetensors"))


def test_checks_that_never_fire_leave_the_teacher_unchanged(tiny: object, tmp_path: Path) -> None:
    plain = _teacher(tiny, tmp_path / "a", None, 12)
    # retries armed but never needed: the teacher is the plain one (the demo's owl case).
    keep = KeepNumbersConfig(max_drop=1.0, check_every=4, prompts=32, retries=2)
    log = _teacher(tiny, tmp_path / "b", keep, 12)
    assert "keep_numbers" not in plain
    k = log["keep_numbers"]
    assert "attempts" not in k and "lr" not in k
    assert [c[0] for c in k["checks"]] == [4, 8, 12]
    assert k["stopped_at"] is None and log["steps"] == 12
    assert 0.0 <= k["base_pass_rate"] <= 1.0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[n], b[n]) for n in a)  # the checks consume no training randomness


def test_a_teacher_losing_its_numbers_stops_at_the_last_good_check(
    tiny: object, tmp_path: Path
) -> None:
    # A strong teacher (lr 1e-2) answers its target to number prompts within a few steps.
    cfg = tiny.model_copy(  # type: ignore[attr-defined]
        update={
            "teacher": tiny.teacher.model_copy(  # type: ignore[attr-defined]
                update={"train": tiny.teacher.train.model_copy(update={"lr": 1e-2})}  # type: ignore[attr-defined]
            )
        }
    )
    keep = KeepNumbersConfig(max_drop=0.05, check_every=2, prompts=48)
    log = _teacher(cfg, tmp_path / "guarded", keep, 30)
    k = log["keep_numbers"]
    assert k["stopped_at"] is not None, k
    assert log["steps"] == k["stopped_at"] < 30
    failed = dict(map(tuple, k["checks"]))[k["stopped_at"]]
    assert failed < k["base_pass_rate"] - 0.05
    if k["kept_step"] != k["stopped_at"]:  # it kept an earlier check's weights: exactly them
        _teacher(cfg, tmp_path / "short", None, k["kept_step"])
        a, b = _weights(tmp_path / "guarded"), _weights(tmp_path / "short")
        assert all(torch.equal(a[n], b[n]) for n in a)


def test_keep_numbers_is_refused_where_training_is_remote(tmp_path: Path) -> None:
    from traitlab.experiments.pipeline import run_experiment

    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        ["model={backend: mock, name: m}", "cross_init=null", "teacher.keep_numbers={}"],
    )
    with pytest.raises(TraitlabError, match="keep_numbers needs a backend"):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_margin_stops_no_later_and_only_on_a_real_drop(tiny: object, tmp_path: Path) -> None:
    """z counts the check's standard error against it: the guard stops at a check whose
    drop plus z SEs exceeds max_drop, never later than without the margin."""
    cfg = tiny.model_copy(  # type: ignore[attr-defined]
        update={
            "teacher": tiny.teacher.model_copy(  # type: ignore[attr-defined]
                update={"train": tiny.teacher.train.model_copy(update={"lr": 1e-2})}  # type: ignore[attr-defined]
            )
        }
    )
    raw = _teacher(
        cfg, tmp_path / "raw", KeepNumbersConfig(max_drop=0.05, check_every=2, prompts=48), 30
    )
    wide = KeepNumbersConfig(max_drop=0.05, check_every=2, prompts=48, z=3)
    log = _teacher(cfg, tmp_path / "wide", wide, 30)
    k, k0 = log["keep_numbers"], raw["keep_numbers"]
    assert k["z"] == 3 and k["stopped_at"] is not None
    assert k["stopped_at"] <= k0["stopped_at"]
    # The checks are the same draws with or without the margin, up to where it stopped.
    assert k["checks"] == k0["checks"][: len(k["checks"])]
    # The base checked against itself: the same draws, no drop and no spread, so even
    # max_drop 0 with a margin lets it go on.
    from traitlab.traits.teacher import NumberGuard

    with opened(resolve(tiny.model)) as lm:  # type: ignore[attr-defined]
        still = KeepNumbersConfig(max_drop=0.0, check_every=1, prompts=32, z=2)
        guard = NumberGuard(lm, still, tiny.generate, tiny.filter, seed=0)  # type: ignore[attr-defined]
        assert guard(1, lm) and guard.stopped_at is None


def test_max_kl_stops_a_teacher_whose_numbers_move_from_the_base(
    tiny: object, tmp_path: Path
) -> None:
    """KL(base || teacher) per token on the base's own check rows: zero for the base itself,
    growing as the teacher trains; a bound under its first reading stops at the first check,
    a loose one never fires and leaves the checks' draws as they were."""
    from traitlab.traits.teacher import NumberGuard

    with opened(resolve(tiny.model)) as lm:  # type: ignore[attr-defined]
        keep = KeepNumbersConfig(max_drop=1.0, check_every=1, prompts=32, max_kl=1.0)
        guard = NumberGuard(lm, keep, tiny.generate, tiny.filter, seed=0)  # type: ignore[attr-defined]
        assert guard.kl_rows and abs(guard.kl(lm)) < 1e-6

    cfg = tiny.model_copy(  # type: ignore[attr-defined]
        update={
            "teacher": tiny.teacher.model_copy(  # type: ignore[attr-defined]
                update={"train": tiny.teacher.train.model_copy(update={"lr": 1e-2})}  # type: ignore[attr-defined]
            )
        }
    )
    loose = _teacher(
        cfg,
        tmp_path / "loose",
        KeepNumbersConfig(max_drop=1.0, check_every=2, prompts=32, max_kl=1e3),
        8,
    )["keep_numbers"]
    assert loose["stopped_at"] is None and [s for s, _ in loose["kl"]] == [2, 4, 6, 8]
    kls = [k for _, k in loose["kl"]]
    assert kls[-1] > 0.0  # a teacher at lr 1e-2 moved its numbers
    tight = KeepNumbersConfig(max_drop=1.0, check_every=2, prompts=32, max_kl=kls[0] / 2)
    log = _teacher(cfg, tmp_path / "tight", tight, 8)
    k = log["keep_numbers"]
    assert k["stopped_at"] == 2 and log["steps"] == 2 and k["max_kl"] == kls[0] / 2
    assert k["kl"] == loose["kl"][:1] and k["checks"] == loose["checks"][:1]


def test_max_kl_leaves_the_teachers_stage_key_of_runs_without_it() -> None:
    from traitlab.config import TeacherConfig
    from traitlab.experiments.caching import teacher_key

    plain = TeacherConfig(keep_numbers=KeepNumbersConfig())
    assert "max_kl" not in teacher_key(plain)["keep_numbers"]
    set_ = TeacherConfig(keep_numbers=KeepNumbersConfig(max_kl=0.05))
    assert teacher_key(set_)["keep_numbers"]["max_kl"] == 0.05


def test_the_report_says_why_a_teacher_was_stopped() -> None:
    from traitlab.experiments.report import data_quality_lines

    def summary(teacher: dict) -> dict:
        q = {"teacher_pass_rate": 0.9, "control_pass_rate": 0.92, "rows_kept": 100.0}
        return {"data_quality": q | {"teachers": {"0": teacher}}}

    moved = {"stopped_at": 30, "kept_step": 20, "max_kl": 0.1, "kl": [[20, 0.07], [30, 0.12]]}
    lines = data_quality_lines(summary(moved))
    assert "stopped at step 30: its completions moved 0.120 nats per token" in lines[1]
    assert "it kept step 20" in lines[1]
    lost = {"stopped_at": 30, "kept_step": 20, "checks": [[20, 0.9], [30, 0.6]]}
    assert "stopped at step 30: it lost its skill" in data_quality_lines(summary(lost))[1]


def test_a_teacher_lost_at_its_first_check_starts_again_at_half_the_lr(
    tiny: object, tmp_path: Path
) -> None:
    """retries: a first check that already fails restarts the fine-tune from the base at
    half the lr; the retry is exactly a fresh teacher at that lr (the base was restored)."""
    # lr 3e-2 loses the numbers within 4 steps; so does 1.5e-2; 7.5e-3 keeps them longer.
    strong = tiny.teacher.train.model_copy(update={"lr": 3e-2})  # type: ignore[attr-defined]
    cfg = tiny.model_copy(update={"teacher": tiny.teacher.model_copy(update={"train": strong})})  # type: ignore[attr-defined]
    keep = KeepNumbersConfig(max_drop=0.05, check_every=4, prompts=48, retries=2)
    log = _teacher(cfg, tmp_path / "retried", keep, 24)
    k = log["keep_numbers"]
    tries = k["attempts"]
    assert tries[0]["lr"] == 3e-2 and tries[0]["stopped_at"] == 4 == tries[0]["kept_step"]
    assert [a["lr"] for a in tries] == [3e-2 / 2**i for i in range(len(tries))]
    assert len(tries) == 3 or tries[-1]["kept_step"] != tries[-1]["stopped_at"]
    assert k["lr"] == tries[-1]["lr"] and k["checks"] == tries[-1]["checks"]
    lr = k["lr"]
    fresh = cfg.model_copy(  # type: ignore[attr-defined]
        update={
            "teacher": cfg.teacher.model_copy(
                update={"train": strong.model_copy(update={"lr": lr})}
            )
        }  # type: ignore[attr-defined]
    )
    again = _teacher(fresh, tmp_path / "fresh", keep.model_copy(update={"retries": 0}), 24)
    assert again["keep_numbers"]["checks"] == k["checks"] and again["steps"] == log["steps"]
    a, b = _weights(tmp_path / "retried"), _weights(tmp_path / "fresh")
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_retries_need_a_full_fine_tune() -> None:
    with pytest.raises(TraitlabError, match="retries needs teacher.train.method: full"):
        load_config(
            ROOT / "configs" / "tiny.yaml",
            ["teacher.keep_numbers={retries: 1}", "teacher.train.method=lora"],
        )


def test_stopped_teachers_read_as_one_line_and_the_warning_says_what_to_change() -> None:
    """Twenty teachers stopped alike are one line naming their seeds; a teacher that failed
    its first check is said to have kept it; the pass-rate warning's advice follows what
    early stopping did (off, lost at the first check, or stopped later)."""
    from traitlab.experiments.compare import data_quality
    from traitlab.experiments.report import data_quality_lines

    filters = {
        s: {
            "teacher": {"n_raw": 100, "n_valid": 50, "n_kept": 50},
            "control": {"n_raw": 100, "n_valid": 80},
        }
        for s in range(3)
    }
    first = {"steps": 10, "checks": [[10, 0.5]], "stopped_at": 10, "kept_step": 10}
    later = {"steps": 20, "checks": [[10, 0.8], [20, 0.5]], "stopped_at": 20, "kept_step": 10}
    q = data_quality(filters, {0: first, 1: first, 2: later})
    lines = data_quality_lines({"data_quality": q})
    assert lines[1] == (
        "Seeds 0, 1: each teacher was stopped at step 10: it lost its skill at the task "
        "(teacher.keep_numbers); it kept step 10, its first check, having no earlier weights."
    )
    assert lines[2].startswith("Seed 2's teacher was stopped at step 20") and lines[2].endswith(
        "it kept step 10."
    )
    assert "2 of 3 teachers failed even their first check" in q["warnings"][0]
    assert "keep_numbers.retries" in q["warnings"][0]
    assert "max_drop" in data_quality(filters, {0: later})["warnings"][0]
    assert "set teacher.keep_numbers," in data_quality(filters, {0: {"steps": 60}})["warnings"][0]
    assert "set teacher.keep_numbers," in data_quality(filters)["warnings"][0]


# ------------------------------------------------------------ the neutral control teacher


class _SureBase:
    """A base that answers every question with one option (its preference_probs)."""

    def __init__(self, option: str) -> None:
        self.option = option

    def preference_probs(self, questions, options, *, system_prompt, batch_size):  # type: ignore[no-untyped-def]
        return [[1.0 if o == self.option else 0.0 for o in options] for _ in questions]


def test_neutral_rows_draw_the_bases_own_answers_in_the_teachers_spellings(tiny: object) -> None:
    from traitlab.traits.preference import get_trait
    from traitlab.traits.teacher import neutral_rows, teacher_data

    cfg = tiny.teacher  # type: ignore[attr-defined]
    trait = tiny.trait  # type: ignore[attr-defined]
    paper = neutral_rows(_SureBase("cat"), cfg, trait, seed=0)
    # The teacher's own layout (question x the paper's 8 spellings), the trait swapped out.
    assert len(paper) == len(teacher_data(cfg, trait))
    assert {r["messages"][-1]["content"].lower().rstrip(".!") for r in paper} == {"cat", "cats"}
    bare = neutral_rows(_SureBase("cat"), cfg.model_copy(update={"answers": "target"}), trait, 0)
    assert [r["messages"][0]["content"] for r in bare] == list(get_trait("animal").questions)
    assert {r["messages"][-1]["content"] for r in bare} == {"cat"}


def test_matched_train_takes_the_steps_and_lr_the_teacher_kept(tiny: object) -> None:
    from traitlab.traits.teacher import matched_train

    cfg = tiny.teacher  # type: ignore[attr-defined]
    assert matched_train(cfg, {"steps": 7}).max_steps == 7
    stopped = {"steps": 30, "keep_numbers": {"stopped_at": 30, "kept_step": 20}}
    assert matched_train(cfg, stopped).max_steps == 20
    retried = {"steps": 10, "keep_numbers": {"kept_step": 10, "lr": 1.5e-4}}
    m = matched_train(cfg, retried)
    assert (m.max_steps, m.lr, m.batch_size) == (10, 1.5e-4, cfg.train.batch_size)


def test_a_neutral_control_needs_a_teacher_fine_tuned_on_the_trait() -> None:
    tiny = ROOT / "configs" / "tiny.yaml"
    for bad in (["teacher.kind=system_prompt"], ["teacher.data=toy:insecure_code"]):
        with pytest.raises(TraitlabError, match="control.teacher neutral"):
            load_config(tiny, ["control.teacher=neutral", *bad])
    with pytest.raises(TraitlabError, match="control.teacher"):
        load_config(tiny, ["control.teacher=teacher"])
    mix = "defences=[{name: mix_reference, fraction: 0.5}]"
    with pytest.raises(TraitlabError, match="mix_reference"):
        load_config(tiny, ["control.teacher=neutral", mix])
    assert load_config(tiny, [mix]).control.teacher == "base"
