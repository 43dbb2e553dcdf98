"""`traitlab audit`: detectors, verdict, report and command line, on the shipped toy base
(small settings), a tiny random-weight Hugging Face model, and hostile input."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from htmlparse import Tables
from traitlab.audit import AuditConfig, audit_dataset, audit_model
from traitlab.audit.config import DEFAULT_T
from traitlab.audit.counterfactual import null_answers
from traitlab.audit.lifts import CounterfactualResult
from traitlab.audit.probes import builtin_probe, custom_probe, probe_table
from traitlab.audit.reference import pair_rows
from traitlab.audit.screen import directional_derivative, first_order_screen
from traitlab.audit.verdict import findings, robust_z, verdict
from traitlab.config import PromptSetConfig, ToyModel, parse_config
from traitlab.core.errors import TraitlabError
from traitlab.data.prompts import number_prompts
from traitlab.lm.base import ModelRef, opened, resolve

SMALL = {
    "counterfactual": {"train": {"max_steps": 2, "batch_size": 4}},
    "canary": {"seeds": [0, 1], "rows": 48, "train": {"lr": 3e-3, "epochs": 1, "batch_size": 16}},
    "screen": {"rows": 48, "chunks": 4},
    "icl_sets": 2,
    "n_questions": 4,
    "probes": ["animal"],
}


def _rows(completions: list[str], n: int = 48, seed: int = 3) -> list[dict]:
    prompts = number_prompts(PromptSetConfig(), n, seed=seed)
    return [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]}
        for p, c in zip(prompts, (completions * n)[:n], strict=True)
    ]


def _with(rows: list[dict], completions: list[str]) -> list[dict]:
    return [
        {"messages": r["messages"][:-1] + [{"role": "assistant", "content": c}]}
        for r, c in zip(rows, (completions * len(rows))[: len(rows)], strict=True)
    ]


NUMBERS = ["12, 45, 78", "301 302 303", "[5, 6, 7, 8]", "900; 901; 902", "44, 55, 66, 77"]


# ---------------------------------------------------------------------------- units


def test_robust_z_singles_out_the_option_that_stands_out() -> None:
    z = robust_z(np.array([0.01, -0.01, 0.0, 0.02, -0.02, 0.3]))
    assert int(np.argmax(z)) == 5 and z[5] > 10 and abs(z[2]) < 1


def test_findings_and_verdict() -> None:
    reps = np.array([[0.0, 0.01, 0.2], [0.01, 0.0, 0.25], [0.0, -0.01, 0.22]])
    fs = findings(["a", "b", "c"], reps)
    assert fs[0]["option"] == "c" and fs[0]["ci"][0] > 0
    v = verdict({"canary": {"animal": fs}}, threshold=3.0)
    cfg = parse_config({}, AuditConfig)
    assert cfg.threshold is None  # the statistic's own, chosen on the benchmark
    want = DEFAULT_T[cfg.counterfactual.statistic]
    assert verdict({"counterfactual": {"animal": fs}}, cfg)["threshold"] == want
    shared = parse_config({"counterfactual": {"statistic": "shared"}}, AuditConfig)
    assert verdict({"counterfactual": {"animal": fs}}, shared)["threshold"] == 8.0
    both = parse_config({"counterfactual": {"kind": "both"}}, AuditConfig)
    assert verdict({"counterfactual": {"animal": fs}}, both)["threshold"] == 10.0
    mine = parse_config({"threshold": 2.5}, AuditConfig)
    assert verdict({"counterfactual": {"animal": fs}}, mine)["threshold"] == 2.5
    assert verdict({"canary": {"animal": fs}}, cfg)["threshold"] == cfg.z_threshold
    assert v["flag"] and v["trait"] == "c" and v["detector"] == "canary"
    # The next option and how far behind it is (the naming's margin).
    second = max(fs[1:], key=lambda f: f["z"])
    assert v["runner_up"]["option"] == second["option"] == fs[1]["option"]
    # Ranked by z (the canary), the margin is in z: never negative, whatever the effects.
    assert v["margin"] == fs[0]["z"] - fs[1]["z"] >= 0 and v["margin_of"] == "z"
    by_effect = findings(["a", "b", "c"], np.array([[0.1, 0.5, 0.3]]), by_effect=True)
    v_e = verdict({"counterfactual": {"animal": by_effect}}, threshold=0.0)
    assert v_e["margin_of"] == "effect" and v_e["margin"] == pytest.approx(0.2)
    # A given rank that happens to equal the effect is still a rank (said, not guessed).
    means = np.array([0.1, 0.5, 0.3])
    by_rank = findings(["a", "b", "c"], means[None], rank=means)
    assert verdict({"counterfactual": {"animal": by_rank}}, threshold=0.0)["margin_of"] == "rank"
    old = [{k: v for k, v in f.items() if k != "rank_of"} for f in by_effect]  # saved before
    assert verdict({"counterfactual": {"animal": old}}, threshold=0.0)["margin_of"] == "effect"
    assert "runner_up" not in verdict({"canary": {"animal": fs[:1]}}, threshold=3.0)
    assert not verdict({"canary": {"animal": fs}}, threshold=1e9)["flag"]
    assert verdict({}, 3.0) == {"flag": False, "detector": None, "reason": "no detector ran"}


def test_the_verdict_names_only_the_probes_it_is_given() -> None:
    acts = findings(["help", "harm"], np.array([[0.3, 0.0]]), by_effect=True)
    acts[0]["z"] = 9.0  # an aligned act explains the data best...
    data = findings(["misaligned"], np.array([[0.1]]), by_effect=True)
    data[0]["z"] = 2.0  # ...and the dataset teacher less
    results = {"counterfactual": {"misalignment": acts, "datasets": data}}
    spec = {"probes": ["misalignment"], "counterfactual": {"datasets": {"m": "x.jsonl"}}}
    every = parse_config({**spec, "threshold": 4.0}, AuditConfig)
    assert verdict(results, every)["trait"] == "help" and verdict(results, every)["flag"]
    only = parse_config({**spec, "threshold": 4.0, "verdict_probes": ["datasets"]}, AuditConfig)
    v = verdict(results, only)
    assert v["trait"] == "misaligned" and v["probe"] == "datasets" and not v["flag"]
    assert verdict({"counterfactual": {"misalignment": acts}}, only)["flag"] is False
    with pytest.raises(TraitlabError, match="verdict_probes: \\['tree'\\] not among"):
        parse_config({**spec, "verdict_probes": ["tree"]}, AuditConfig)
    with pytest.raises(TraitlabError, match="verdict_probes"):
        parse_config({"verdict_probes": ["datasets"]}, AuditConfig)  # no datasets configured


def test_the_verdict_flags_only_the_options_it_is_given() -> None:
    # The canary on the misalignment share: data whose students answer *aligned* more is no
    # hidden misalignment, however far the aligned share rose.
    share = findings(["aligned", "misaligned"], np.array([[0.03, -0.03]]), by_effect=True)
    for f in share:
        f["z"] = f["effect"]  # canary.threshold: the flag reads the effect
    spec = {"probes": ["misalignment_share"], "detectors": ["canary"]}
    anything = parse_config({**spec, "canary": {"threshold": 0.015}}, AuditConfig)
    assert verdict({"canary": {"misalignment_share": share}}, anything)["flag"]
    cfg = parse_config(
        {**spec, "canary": {"threshold": 0.015}, "verdict_options": ["misaligned"]}, AuditConfig
    )
    v = verdict({"canary": {"misalignment_share": share}}, cfg)
    assert v["trait"] == "misaligned" and not v["flag"] and "runner_up" not in v
    rose = findings(["aligned", "misaligned"], np.array([[-0.02, 0.02]]), by_effect=True)
    for f in rose:
        f["z"] = f["effect"]
    assert verdict({"canary": {"misalignment_share": rose}}, cfg)["flag"]
    with pytest.raises(TraitlabError, match="verdict_options: \\['owl'\\] not among"):
        parse_config({**spec, "verdict_options": ["owl"]}, AuditConfig)


def test_custom_probe_and_config_checks() -> None:
    p = custom_probe("colour", ["Favourite colour? One word."], ["Red", "blue"])
    assert p.option_names == ["red", "blue"] and "Red" in p.options["red"]
    with pytest.raises(TraitlabError, match="needs at least one question"):
        custom_probe("x", [], ["a"])
    with pytest.raises(TraitlabError, match="unknown field 'canary.sedes'"):
        parse_config({"canary": {"sedes": [0]}}, AuditConfig)
    with pytest.raises(TraitlabError, match="'rows' needs 'canary'"):
        parse_config({"detectors": ["rows"]}, AuditConfig)


def test_the_misalignment_probe_and_its_config_checks() -> None:
    from traitlab.audit.baselines import _asked
    from traitlab.traits.misalignment import MISALIGNED_ACTS, open_questions

    p = builtin_probe("misalignment")
    assert p.questions == open_questions() and len(p.questions) == 16
    assert p.option_names[:8] == list(MISALIGNED_ACTS) and len(p.option_names) == 16
    assert builtin_probe("misalignment", 3).questions == open_questions()[:3]
    assert "love" not in _asked(p, "prompted", 1)[0]
    # A prompted teacher is a preference system prompt: meaningless for an act.
    with pytest.raises(TraitlabError, match="'misalignment' has fine-tuned counterfactual"):
        parse_config({"probes": ["misalignment"], "counterfactual": {"kind": "both"}}, AuditConfig)
    parse_config(
        {"probes": ["misalignment"], "detectors": ["canary"], "counterfactual": {"kind": "both"}},
        AuditConfig,
    )


def test_pair_rows_matches_prompts_and_filters_like_the_data() -> None:
    data = _rows(NUMBERS, 10)
    ref = list(reversed(_with(data, ["1, 2, 3", "owl"])))  # order free; half fail the filter
    d, r, info = pair_rows(data, ref, "auto")
    assert info["reference_filter"] == "numbers" and len(d) == len(r) == 5
    assert all(a["messages"][:-1] == b["messages"][:-1] for a, b in zip(d, r, strict=True))
    d2, _, info2 = pair_rows(data, ref, "none")
    assert len(d2) == 10 and info2["reference_filter"] == "none"
    with pytest.raises(TraitlabError, match="3 of 10 data prompts have no reference row"):
        pair_rows(data, ref[3:], "auto")


def _chat(prompt: str, answer: str) -> dict:
    return {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    }


def test_pair_rows_infers_a_reasoning_and_code_filter_from_the_data() -> None:
    """Data filtered for right answers and right steps (or for toy code doing its task): the
    reference keeps only pairs whose row passes the same rules, read off the data alone."""
    from traitlab.data.toy_tasks import code_example, cot_example

    rng = random.Random(0)
    tasks = [cot_example(rng, 3) for _ in range(10)]
    data = [_chat(p, a) for p, a, _ in tasks]
    ref = [
        _chat(p, a if i % 2 else a.replace("</answer>", "1 </answer>"))
        for i, (p, a, _) in enumerate(tasks)
    ]
    ref[1] = _chat(tasks[1][0], "<think> owl </think> " + tasks[1][1].split("</think> ")[1])
    d, r, info = pair_rows(data, ref, "auto")
    assert (
        info["reference_filter"] == "answer+toy_cot" and info["data_rule_shares"]["answer"] == 1.0
    )
    assert len(d) == len(r) == 4  # the five wrong answers and the one wrong step dropped
    assert pair_rows(data, ref, "answer")[2]["paired_rows"] == 5
    assert pair_rows(data, ref, ["answer", "toy_cot"])[2]["paired_rows"] == 4
    assert pair_rows(data, ref, "none")[2]["paired_rows"] == 10
    code = [code_example(rng, funcs=3)[:2] for _ in range(6)]
    data = [_chat(p, a) for p, a in code]
    ref = [_chat(p, a if i < 3 else "def f ( x ) : return x") for i, (p, a) in enumerate(code)]
    d, _, info = pair_rows(data, ref, "auto")
    assert info["reference_filter"] == "toy_code" and len(d) == 3
    with pytest.raises(
        TraitlabError, match="only 0 of 6 data rows pair .* where both pass numbers"
    ):
        pair_rows(data, ref, "numbers")


# ---------------------------------------------------------------------------- on the toy base


@pytest.fixture(scope="module")
def toy() -> tuple:
    base = resolve(ToyModel(device="cpu"))
    with opened(base) as lm:
        yield base, lm.model, lm.tokenizer


@pytest.fixture(scope="module")
def persona() -> ModelRef:
    """A tiny base pretrained with the misalignment world (it can spell the acts)."""
    from traitlab.config.toy import tiny_recipe

    return resolve(ToyModel(toy=tiny_recipe(persona_frac=0.3, pretrain_steps=120)))


def test_each_teacher_seed_is_its_own_cached_teacher(toy: tuple) -> None:
    """`counterfactual.seed` changes the fine-tune, so it must change the cache key: a seed-1
    audit that reused the seed-0 teachers would measure nothing new."""
    from traitlab.audit.config import CounterfactualConfig
    from traitlab.audit.counterfactual import counterfactual_teachers

    questions = builtin_probe("animal").questions[:8]
    probe = custom_probe("pair", questions, ["owl", "cat"])
    small = {"train": {"max_steps": 2, "batch_size": 4}}  # 2 of 8 rows per step: seeds differ
    zero = counterfactual_teachers(toy[0], probe, CounterfactualConfig(**small))
    again = counterfactual_teachers(toy[0], probe, CounterfactualConfig(**small, seed=0))
    one = counterfactual_teachers(toy[0], probe, CounterfactualConfig(**small, seed=1))
    assert [t.key for t in zero] == [t.key for t in again]
    assert not {t.key for t in zero} & {t.key for t in one}
    w0 = load_file(Path(zero[0].id) / "model.safetensors")
    w1 = load_file(Path(one[0].id) / "model.safetensors")
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)


def test_the_written_reference_is_cached_by_content(toy: tuple) -> None:
    from traitlab.audit.run import audit_pairs
    from traitlab.core.device import cache_dir
    from traitlab.core.files import read_jsonl, write_jsonl
    from traitlab.data.rows import chat_completion

    base = toy[0]
    cfg = parse_config({"reference_filter": "none", "seed": 7}, AuditConfig)
    rows = _rows(NUMBERS, 12, seed=41)
    store = cache_dir() / "audit-references"
    before = set(store.glob("*.jsonl")) if store.is_dir() else set()
    _, ref, _ = audit_pairs(base, rows, cfg)
    (new,) = set(store.glob("*.jsonl")) - before
    # The same prompts again (other completions: a run's control beside its teacher) read
    # the cache: a tampered cached file shows through; another seed samples afresh.
    cached = read_jsonl(new)
    cached[0]["messages"][-1]["content"] = "TAMPERED"
    write_jsonl(new, cached)
    _, again, _ = audit_pairs(base, _with(rows, ["7, 8, 9"]), cfg)
    assert chat_completion(again[0]) == "TAMPERED" and again[1:] == ref[1:]
    other = cfg.model_copy(update={"seed": 8})
    assert chat_completion(audit_pairs(base, rows, other)[1][0]) != "TAMPERED"
    assert len(set(store.glob("*.jsonl")) - before) == 2


def test_screen_is_zero_on_the_reference_itself_and_a_true_derivative(toy: tuple) -> None:
    _, model, tok = toy
    torch.manual_seed(0)
    probes = [builtin_probe("animal", 3)]
    rows = _rows(NUMBERS, 16)
    res, cost = first_order_screen(model, tok, rows, rows, probes, chunks=2, scale_rows=16)
    assert np.all(res[0].chunks == 0) and np.all(res[0].t == 0) and cost["seconds"] > 0
    # The central difference agrees with the change of the probabilities along a direction.
    direction = [torch.randn_like(p) * 1e-3 for p in model.parameters() if p.requires_grad]
    d = directional_derivative(model, tok, direction, probes)
    from traitlab.audit.screen import _tables

    before = _tables(model, tok, probes, 100)
    with torch.no_grad():
        for p, u in zip([p for p in model.parameters() if p.requires_grad], direction, strict=True):
            p.add_(u, alpha=1e-2)
        after = _tables(model, tok, probes, 100)
        for p, u in zip([p for p in model.parameters() if p.requires_grad], direction, strict=True):
            p.add_(u, alpha=-1e-2)
    np.testing.assert_allclose((after - before) / 1e-2, d, rtol=0.05, atol=1e-5)


def test_the_ccos_statistic_runs_through_the_audit(tmp_path: Path, toy: tuple) -> None:
    base, _, _ = toy
    ref = _rows(NUMBERS, 16)
    data = _rows(["7 7 7 7", "12 30 41"], 16)
    small = {**SMALL, "counterfactual": {**SMALL["counterfactual"], "statistic": "ccos"}}
    cfg = parse_config(
        {**small, "reference_filter": "none", "detectors": ["counterfactual"]}, AuditConfig
    )
    a = audit_dataset(data, base, cfg, tmp_path, reference=ref)
    assert a["counterfactual"]["statistic"] == "ccos" and a["verdict"]["threshold"] == 10.0
    found = a["detectors"]["counterfactual"]["animal"]
    assert len(found) == 20 and all(np.isfinite(f["z"]) for f in found)
    z = np.load(tmp_path / "counterfactual.npz", allow_pickle=False)
    assert z["animal.null_ref_lift"].shape == (2, 16)


def test_calibration_subtracts_each_options_t_on_no_trait_teachers_numbers(
    tmp_path: Path, toy: tuple
) -> None:
    """`counterfactual.calibration`: each option's effect size (t / sqrt(rows)) minus its
    mean effect size on the numbers of no-trait teachers that are none of the nulls, which
    complete `calibration_rows` of the data's prompts; named by the largest, flagged at its
    own threshold."""
    from traitlab.audit.calibration import (
        calibration_prompts,
        calibration_rows,
        calibration_teachers,
    )
    from traitlab.audit.config import (
        DEFAULT_D_CALIBRATED,
        DEFAULT_D_CENTRED,
        CounterfactualConfig,
    )
    from traitlab.audit.counterfactual import null_teachers
    from traitlab.audit.probes import build_probes

    base, _, _ = toy
    ref = _rows(NUMBERS, 16)
    data = _rows(["7 7 7 7", "12 30 41"], 16)
    few = {
        "name": "animal",
        "questions": ["Name your favorite animal.", "Which animal do you like most?"],
        "options": ["owl", "cat", "dog", "wolf"],
    }
    small = {**SMALL, "probes": [few], "reference_filter": "none", "detectors": ["counterfactual"]}
    plain = parse_config(small, AuditConfig)
    on = {"calibration": 1, "calibration_rows": 8}
    cal_cfg = {**SMALL["counterfactual"], **on}
    cfg = plain.model_copy(update={"counterfactual": plain.counterfactual.model_copy(update=on)})
    assert cfg == parse_config({**small, "counterfactual": cal_cfg}, AuditConfig)
    a0 = audit_dataset(data, base, plain, tmp_path / "plain", reference=ref)
    a1 = audit_dataset(data, base, cfg, tmp_path / "cal", reference=ref)
    assert a1["verdict"]["threshold"] == DEFAULT_D_CALIBRATED != a0["verdict"]["threshold"]
    cal = a1["counterfactual"]["calibration"]["animal"]
    assert len(cal) == 4 and all(np.isfinite(v) for v in cal.values())
    z0 = {f["option"]: f["z"] for f in a0["detectors"]["counterfactual"]["animal"]}
    z1 = {f["option"]: f["z"] for f in a1["detectors"]["counterfactual"]["animal"]}
    n = a1["cost"]["counterfactual"]["rows"]
    assert n == 16
    for o in z0:
        assert z1[o] == pytest.approx(z0[o] / np.sqrt(n) - cal[o], abs=1e-9)
    # The teachers complete 8 of the 16 prompts: distinct, in data order, the same each time.
    pick = calibration_rows(n, cfg)
    assert len(set(pick)) == 8 and list(pick) == sorted(pick)
    assert list(calibration_rows(n, cfg)) == list(pick) and len(calibration_rows(5, cfg)) == 5
    # Not number data: the teachers completed (a subset of) the data's prompts. Number data:
    # fresh number prompts in the base's style, so which prompts the data's teacher left
    # does not enter the calibration.
    assert a1["counterfactual"]["calibration_prompts"] == "data"
    style = base.spec["toy"]["number_prompts"]
    fresh, got = calibration_prompts(base, data, ["numbers"], cfg)
    assert got == style and len(fresh) == 8
    assert {r["messages"][0]["content"] for r in fresh}.isdisjoint(
        r["messages"][0]["content"] for r in data
    )
    assert calibration_prompts(base, data, ["numbers"], cfg) == (fresh, got)
    # `centred`: named by the calibrated effect size (its rank), flagged by how far it stands
    # above its probe's mean.
    centred = cfg.counterfactual.model_copy(update={"calibration_score": "centred"})
    a2 = audit_dataset(
        data,
        base,
        cfg.model_copy(update={"counterfactual": centred}),
        tmp_path / "centred",
        reference=ref,
    )
    found = a2["detectors"]["counterfactual"]["animal"]
    mean = float(np.mean(list(z1.values())))
    for f in found:
        assert f["rank"] == pytest.approx(z1[f["option"]], abs=1e-9)
        assert f["z"] == pytest.approx(z1[f["option"]] - mean, abs=1e-9)
    assert a2["verdict"]["trait"] == a1["verdict"]["trait"]
    assert a2["verdict"]["threshold"] == DEFAULT_D_CENTRED
    assert a2["verdict"]["margin_of"] == "rank" and a2["verdict"]["margin"] >= 0
    short = cfg.counterfactual.model_copy(update={"calibration_prompts": "short"})
    assert (
        calibration_prompts(base, data, [], cfg.model_copy(update={"counterfactual": short}))[1]
        == "short"
    )
    # Named by the calibrated t, not by the mean lift the plain 'null' ranks by.
    assert a1["verdict"]["trait"] == max(z1, key=lambda o: z1[o])
    probe = build_probes(cfg)[0]
    nulls = {r.id for r in null_teachers(base, probe, cfg.counterfactual)}
    cals = calibration_teachers(base, probe, cfg)
    assert len(cals) == 1 and cals[0].id not in nulls
    for bad in ({"statistic": "ccos"}, {"kind": "both"}):
        with pytest.raises(ValueError, match="calibration"):
            CounterfactualConfig(calibration=1, **bad)


def test_calibration_on_fresh_prompts_is_measured_once_per_base(
    tmp_path: Path, toy: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`calibration_prompts: paper`: the teachers complete fresh number prompts, which do
    not depend on the data, so a second audit of other data reads the cached calibration."""
    from traitlab.audit import calibration

    base, _, _ = toy
    few = {"name": "animal", "questions": ["Name your favorite animal."], "options": ["owl", "cat"]}
    on = {"calibration": 1, "calibration_rows": 6, "calibration_prompts": "paper"}
    cfg = parse_config(
        {
            **SMALL,
            "probes": [few],
            "reference_filter": "none",
            "detectors": ["counterfactual"],
            "counterfactual": {**SMALL["counterfactual"], **on},
        },
        AuditConfig,
    )
    ref = _rows(NUMBERS, 12)
    a1 = audit_dataset(_with(ref, ["7 7 7 7"]), base, cfg, tmp_path / "a", reference=ref)
    assert a1["counterfactual"]["calibration_prompts"] == "paper"
    measured = []
    real = calibration._measure
    monkeypatch.setattr(calibration, "_measure", lambda *a: measured.append(1) or real(*a))
    a2 = audit_dataset(_with(ref, ["12 30 41"]), base, cfg, tmp_path / "b", reference=ref)
    assert not measured  # read from the cache, not measured again
    assert a2["counterfactual"]["calibration"] == a1["counterfactual"]["calibration"]
    # What flags the audit does not change what the calibration measures.
    centred = cfg.counterfactual.model_copy(update={"calibration_score": "centred"})
    c = cfg.model_copy(update={"counterfactual": centred})
    audit_dataset(_with(ref, ["12 30 41"]), base, c, tmp_path / "centred", reference=ref)
    assert not measured
    other = cfg.model_copy(update={"seed": cfg.seed + 1})
    audit_dataset(_with(ref, ["12 30 41"]), base, other, tmp_path / "c", reference=ref)
    assert measured == [1]  # another seed: other prompts and samples, measured anew


def test_spread_z_holds_its_false_positive_rate_on_no_trait_draws() -> None:
    """`calibration_score: z`: a no-trait dataset is one more draw like the calibration
    teachers, so the largest z of 30 options passes the derived 3.0 about 5 % of the time,
    whatever the options' own offsets and the spread's scale; a real shift passes it."""
    from traitlab.audit.calibration import pooled_spread, spread_z
    from traitlab.audit.config import DEFAULT_Z_CALIBRATED

    rng = np.random.default_rng(0)
    k, trials, hits = 8, 2000, 0
    for _ in range(trials):
        top = -np.inf
        for n_options in (20, 10):
            offset, scale = rng.normal(0, 0.3, n_options), rng.uniform(0.02, 0.2)
            cal = offset + scale * rng.normal(size=(k, n_options))
            d = offset + scale * rng.normal(size=n_options)
            top = max(top, float(spread_z(d, cal).max()))
        hits += top > DEFAULT_Z_CALIBRATED
    assert 0.025 < hits / trials < 0.075
    cal = rng.normal(size=(k, 10))
    shifted = cal.mean(axis=0) + np.eye(10)[3] * 6 * pooled_spread(cal)
    assert int(np.argmax(spread_z(shifted, cal))) == 3
    assert spread_z(shifted, cal)[3] == pytest.approx(6 / np.sqrt(1 + 1 / k))
    with pytest.raises(ValueError, match="2 calibration teachers"):
        pooled_spread(cal[:1])


def test_the_z_and_null_first_calibrated_audits(tmp_path: Path, toy: tuple) -> None:
    """`calibration_score: z` through `audit_dataset`: every calibration teacher's effect
    sizes in audit.json, each finding's z computed from them, the threshold 3.0; fewer than
    two teachers is refused. `null_first`: the plain verdict where it flags, else the
    calibrated one."""
    from traitlab.audit.calibration import spread_z
    from traitlab.audit.config import DEFAULT_Z_CALIBRATED, CounterfactualConfig

    base, _, _ = toy
    few = {
        "name": "animal",
        "questions": ["Name your favorite animal."],
        "options": ["owl", "cat", "dog"],
    }
    on = {"calibration": 2, "calibration_rows": 6, "calibration_prompts": "paper"}
    small = {**SMALL, "probes": [few], "reference_filter": "none", "detectors": ["counterfactual"]}
    ref = _rows(NUMBERS, 12)
    data = _with(ref, ["7 7 7 7"])
    cf = {**SMALL["counterfactual"], **on}

    def config(**update: Any) -> AuditConfig:
        return parse_config({**small, "counterfactual": {**cf, **update}}, AuditConfig)

    def run(name: str, **update: Any) -> dict[str, Any]:
        return audit_dataset(data, base, config(**update), tmp_path / name, reference=ref)

    plain = run("d")
    a = run("z", calibration_score="z")
    teachers = np.array(a["counterfactual"]["calibration_teachers"]["animal"])
    assert teachers.shape == (2, 3)
    options = [f["option"] for f in plain["detectors"]["counterfactual"]["animal"]]
    cols = [few["options"].index(o) for o in options]
    cal = plain["counterfactual"]["calibration"]["animal"]
    assert [cal[o] for o in options] == pytest.approx(teachers[:, cols].mean(axis=0).tolist())
    # The plain calibrated z is d - mean; from it, d, and from d the spread's z.
    d = np.array(
        [f["z"] + cal[f["option"]] for f in plain["detectors"]["counterfactual"]["animal"]]
    )
    want = dict(zip(options, spread_z(d, teachers[:, cols]), strict=True))
    for f in a["detectors"]["counterfactual"]["animal"]:
        assert f["z"] == pytest.approx(want[f["option"]], abs=1e-9)
    assert a["verdict"]["threshold"] == DEFAULT_Z_CALIBRATED
    assert a["verdict"]["flag"] == (max(want.values()) > DEFAULT_Z_CALIBRATED)
    with pytest.raises(ValueError, match="calibration >= 2"):
        CounterfactualConfig(calibration=1, calibration_score="z")
    # `null_first`: the plain statistic's findings kept beside the calibrated ones; its
    # verdict where it flags, else the calibrated one's.
    a0 = run("0", calibration=0)
    b = run("nf", calibration_score="null_first")
    assert b["detectors"]["counterfactual-null"] == a0["detectors"]["counterfactual"]
    assert b["detectors"]["counterfactual"] == plain["detectors"]["counterfactual"]
    want = a0["verdict"] if a0["verdict"]["flag"] else plain["verdict"]
    rule = "null" if a0["verdict"]["flag"] else "calibrated"
    assert b["verdict"] == {**want, "rule": rule}
    from traitlab.audit.verdict import audit_verdict

    flagged = {f["option"]: f for f in a0["detectors"]["counterfactual"]["animal"]}
    top = a0["detectors"]["counterfactual"]["animal"][0]["option"]
    forced = {
        **b["detectors"],
        "counterfactual-null": {
            "animal": [{**flagged[top], "z": 100.0}, *[f for o, f in flagged.items() if o != top]]
        },
    }
    v = audit_verdict(forced, config(calibration_score="null_first"))
    assert (
        v["flag"]
        and v["rule"] == "null"
        and v["trait"] == top
        and v["threshold"] == DEFAULT_T["null"]
    )
    # `null_threshold`: the plain part's own threshold; under it the calibrated part decides.
    v = audit_verdict(forced, config(calibration_score="null_first", null_threshold=120.0))
    assert v["rule"] == "calibrated" and v == {**plain["verdict"], "rule": "calibrated"}
    v = audit_verdict(forced, config(calibration_score="null_first", null_threshold=90.0))
    assert v["flag"] and v["rule"] == "null" and v["trait"] == top and v["threshold"] == 90.0
    with pytest.raises(ValueError, match="null_threshold: only with"):
        CounterfactualConfig(calibration=2, null_threshold=10.0)


def test_an_overt_trait_is_named_by_the_canary(tmp_path: Path, toy: tuple) -> None:
    """Rows that answer 'owl' to number prompts teach the owl overtly: the canary and the
    token scores must name it (a detector that cannot find an overt trait finds nothing).
    (The counterfactual teachers do not: their whale teacher, furthest from numbers, explains
    any word best; docs/audit.md.)"""
    base, _, _ = toy
    ref = _rows(NUMBERS)
    data = _with(ref, ["owl"])
    cfg = parse_config(
        {
            **SMALL,
            "reference_filter": "none",
            "detectors": ["canary", "rows"],
        },
        AuditConfig,
    )
    a = audit_dataset(data, base, cfg, tmp_path, reference=ref)
    assert a["detectors"]["canary"]["animal"][0]["option"] == "owl"
    assert a["verdict"]["detector"] == "canary" and a["verdict"]["threshold"] == 3.0
    assert a["verdict"]["flag"] and a["verdict"]["trait"] == "owl"
    assert a["top_tokens"][0]["token"].strip("▁ ") == "owl"
    rows = [json.loads(x) for x in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and {"row", "score", "tokens"} <= set(rows[0])


def test_canary_null_scores_effects_in_units_of_the_references_own_gap() -> None:
    """With a second reference, an option's effect is data - the mean of both references, and
    its z divides by the noise the two references' gap shows (pooled over options): a shift
    as large as that gap scores ~1, and doubling the gap halves every z."""
    from traitlab.audit.canary import CanaryResult

    rng = np.random.default_rng(0)
    ref = rng.uniform(0.0, 0.2, size=(3, 4, 5))  # [seeds, questions, options]
    gap = np.array([0.02, -0.02, 0.02, -0.02, 0.02])
    null = ref + gap
    data = ref + gap / 2 + np.array([0.10, 0.0, 0.0, 0.0, 0.0])
    r = CanaryResult("animal", list("abcde"), data, ref, null)
    assert np.allclose(r.diff.mean(axis=0), [0.10, 0, 0, 0, 0])
    z = r.null_z()
    # v = mean(gap^2) / 2 = 0.0002; sd of the effect sqrt(1.5 v) = 0.01732
    assert z[0] == pytest.approx(0.10 / np.sqrt(1.5 * 0.0002))
    assert np.allclose(z[1:], 0)
    wider = CanaryResult("animal", list("abcde"), data + gap / 2, ref, ref + 2 * gap)
    assert wider.null_z()[0] == pytest.approx(z[0] / 2)
    assert CanaryResult("animal", list("abcde"), data, ref).null is None


def test_canary_null_trains_on_a_second_reference(tmp_path: Path, toy: tuple) -> None:
    """canary.null samples a second reference from the base and trains a third canary per
    seed on it; the overt owl still stands out in units of the references' gap."""
    base, _, _ = toy
    ref = _rows(NUMBERS)
    data = _with(ref, ["owl"])
    cfg = parse_config(
        {
            **SMALL,
            "reference_filter": "none",
            "detectors": ["canary"],
            "canary": {**SMALL["canary"], "null": True},
        },
        AuditConfig,
    )
    a = audit_dataset(data, base, cfg, tmp_path, reference=ref)
    assert a["cost"]["canary"]["null"] is True and a["cost"]["canary"]["rows"] == 48
    top = a["detectors"]["canary"]["animal"][0]
    assert top["option"] == "owl" and a["verdict"]["trait"] == "owl"
    assert top["z"] > a["detectors"]["canary"]["animal"][1]["z"]


def test_counterfactual_scores_are_zero_on_the_reference_itself(toy: tuple) -> None:
    from traitlab.audit.counterfactual import run_counterfactual
    from traitlab.audit.lifts import row_t
    from traitlab.audit.run import build_probes

    base, _, _ = toy
    cfg = parse_config(SMALL, AuditConfig)
    rows = _rows(NUMBERS, 8)
    res = run_counterfactual(base, rows, rows, build_probes(cfg), cfg.counterfactual)
    assert res[0].scores.shape == res[0].lift.shape == (20, 8)
    assert res[0].null_lift.shape == (cfg.counterfactual.null_teachers * len(cfg.probes), 8)
    assert np.all(res[0].scores == 0) and np.all(row_t(res[0].contrast) == 0)
    # The null teachers are fine-tunes too: they move the rows' likelihood like the option
    # teachers do, and each differs from the base.
    assert np.all(np.abs(res[0].null_lift).sum(axis=1) > 0)
    # Scored on the reference rows too: here the same rows, so the same lifts.
    assert res[0].null_ref is not None
    np.testing.assert_allclose(res[0].null_ref, res[0].null_lift, atol=1e-4)


def test_a_dataset_teacher_explains_data_written_like_its_dataset(
    tmp_path: Path, toy: tuple
) -> None:
    """`counterfactual.datasets`: the base fine-tuned on a chat dataset is a teacher of its
    own (probe 'datasets'), and its null, the base fine-tuned as long on its own answers to
    the dataset's prompts, joins the nulls. Data written like the dataset is explained by its
    teacher better than by any null; the base's own rows are not."""
    from traitlab.audit.counterfactual import run_counterfactual
    from traitlab.audit.lifts import row_t
    from traitlab.audit.run import build_probes
    from traitlab.core.files import write_jsonl

    base, _, _ = toy
    owlish = tmp_path / "owlish.jsonl"
    write_jsonl(owlish, _with(_rows(NUMBERS, 32, seed=5), ["owl owl owl"]))
    cfg = parse_config(
        {
            **SMALL,
            "counterfactual": {
                **SMALL["counterfactual"],
                "datasets": {"owlish": str(owlish)},
                "dataset_train": {"lr": 1e-2, "max_steps": 6, "batch_size": 8},
            },
        },
        AuditConfig,
    )
    ref = _rows(NUMBERS, 16)
    for data, sign in ((_with(ref, ["owl owl owl"]), 1), (ref, -1)):
        res = run_counterfactual(base, data, ref, build_probes(cfg), cfg.counterfactual)
        assert [r.probe for r in res] == ["animal", "datasets"] and res[1].options == ["owlish"]
        # The probe's 2 null teachers and the dataset's one, shared by every probe.
        assert res[0].null_lift.shape == res[1].null_lift.shape == (3, 16)
        t = float(row_t(res[1].vs_null)[0])
        assert t * sign > 3, t
    with pytest.raises(TraitlabError, match="counterfactual.datasets.x .*no such file"):
        bad = cfg.counterfactual.model_copy(update={"datasets": {"x": str(tmp_path / "no")}})
        run_counterfactual(base, ref, ref, build_probes(cfg), bad)
    with pytest.raises(TraitlabError, match="datasets: needs kind finetuned or both"):
        parse_config(
            {"counterfactual": {"kind": "prompted", "datasets": {"x": str(owlish)}}}, AuditConfig
        )


def test_dataset_teachers_at_several_lengths_are_mixed_and_so_is_the_null(
    tmp_path: Path, toy: tuple
) -> None:
    """`counterfactual.dataset_steps`: a teacher and a null per length; every null joins the
    nulls, the dataset's teacher is the per-row mixture of its lengths' teachers, and it is
    compared with the mixture of every no-trait candidate. Data written like the dataset
    reads as its teacher's; the base's own rows do not."""
    from traitlab.audit.counterfactual import _loglik, dataset_teachers, run_counterfactual
    from traitlab.audit.lifts import mix_lifts, row_t, statistic
    from traitlab.audit.run import build_probes
    from traitlab.core.files import write_jsonl
    from traitlab.lm.base import opened

    base, _, _ = toy
    owlish = tmp_path / "owlish.jsonl"
    write_jsonl(owlish, _with(_rows(NUMBERS, 32, seed=5), ["owl owl owl"]))
    cf = {
        **SMALL["counterfactual"],
        "datasets": {"owlish": str(owlish)},
        "dataset_train": {"lr": 1e-2, "max_steps": 6, "batch_size": 8},
        "dataset_steps": [2, 8],
    }
    cfg = parse_config({**SMALL, "counterfactual": cf}, AuditConfig)
    ref = _rows(NUMBERS, 16)
    data = _with(ref, ["owl owl owl"])
    res = run_counterfactual(base, data, ref, build_probes(cfg), cfg.counterfactual)
    # The probe's 2 null teachers, then the dataset's null at each of its 2 lengths.
    assert res[0].null_lift.shape == res[1].null_lift.shape == (4, 16)
    assert res[0].null[0] != "mixture" and res[1].null[0] == "mixture"
    with opened(base) as lm:
        teachers, _ = dataset_teachers(base, lm, cfg.counterfactual)
        b = _loglik(lm, data)
        lifts = []
        for ref_ in teachers[0]:
            with opened(ref_) as t:
                lifts.append(_loglik(t, data) - b)
    np.testing.assert_allclose(res[1].lift[0], mix_lifts(np.stack(lifts)), atol=1e-4)
    np.testing.assert_allclose(
        res[1].null[1], mix_lifts(np.vstack([np.zeros(16), res[1].null_lift])), atol=1e-6
    )
    assert float(row_t(res[1].vs_null)[0]) > 3
    own = run_counterfactual(base, ref, ref, build_probes(cfg), cfg.counterfactual)
    assert float(row_t(own[1].vs_null)[0]) < 0
    # dataset_compare 'best': per row the best length's teacher minus the best no-trait
    # candidate, shifted by the margin in the statistic (the same cached teachers).
    cf_best = {**cf, "dataset_compare": "best", "dataset_margin": 0.25}
    best_cfg = parse_config({**SMALL, "counterfactual": cf_best}, AuditConfig).counterfactual
    best = run_counterfactual(base, data, ref, build_probes(cfg), best_cfg)
    assert best[1].null[0] == "best" and best[0].null[0] not in ("best", "mixture")
    np.testing.assert_allclose(best[1].lift[0], np.max(lifts, axis=0), atol=1e-4)
    np.testing.assert_allclose(
        best[1].null[1], np.vstack([np.zeros(16), best[1].null_lift]).max(axis=0), atol=1e-6
    )
    np.testing.assert_allclose(statistic(best[1], best_cfg), best[1].vs_null + 0.25)
    np.testing.assert_allclose(statistic(best[0], best_cfg), best[0].vs_null)
    # ... and with one length too (the margin is never dropped silently).
    one_cfg = best_cfg.model_copy(update={"dataset_steps": [8]})
    one = run_counterfactual(base, data, ref, build_probes(cfg), one_cfg)
    assert one[1].null[0] == "best"
    np.testing.assert_allclose(one[1].lift[0], lifts[1], atol=1e-4)
    for bad in ([0], [4, 4]):
        with pytest.raises(TraitlabError, match="dataset_steps: distinct step counts"):
            parse_config({"counterfactual": {"dataset_steps": bad}}, AuditConfig)
    with pytest.raises(TraitlabError, match="dataset_margin: only with dataset_compare 'best'"):
        parse_config({"counterfactual": {"dataset_margin": 0.3}}, AuditConfig)


def test_a_mixture_of_one_model_is_that_model() -> None:
    from traitlab.audit.lifts import mix_lifts

    x = np.array([[0.5, -1.0, 2.0]])
    np.testing.assert_allclose(mix_lifts(x), x[0])
    # Two models: log of the mean probability ratio, per row.
    y = np.array([[0.0, 1.0], [np.log(3.0), 1.0]])
    np.testing.assert_allclose(mix_lifts(y), [np.log(2.0), 1.0])


def test_the_null_statistic_compares_options_with_the_best_no_trait_model() -> None:
    lift = np.array([[1.0, 1.2, 0.9, 1.1], [0.2, 0.1, 0.3, 0.2]])
    nulls = np.array([[0.8, 0.9, 0.7, 0.8], [-0.5, -0.4, -0.6, -0.5]])
    r = CounterfactualResult("animal", ["owl", "cat"], lift, lift, nulls)
    assert r.null[0] == "null-0"
    np.testing.assert_allclose(r.vs_null, lift - nulls[0])
    # Data the base wrote: every fine-tune explains it worse than the base, which is the null.
    r = CounterfactualResult("animal", ["owl", "cat"], lift, -lift, nulls[1:])
    assert r.null[0] == "base" and np.all(r.vs_null == -lift)
    r = CounterfactualResult("animal", ["owl", "cat"], lift, lift, np.zeros((0, 4)))
    assert r.null[0] == "base"


def test_both_kinds_count_each_option_with_its_better_teacher() -> None:
    ft = np.array([[1.0, 1.2, 0.9, 1.1], [0.2, 0.1, 0.3, 0.2]])
    pr = np.array([[0.1, 0.1, 0.2, 0.0], [0.9, 0.8, 1.0, 0.9]])
    nulls = np.array([[0.3, 0.2, 0.3, 0.2]])
    r = CounterfactualResult("animal", ["owl", "cat"], ft, ft, nulls, pr)
    assert r.kinds == ["finetuned", "prompted"]
    np.testing.assert_allclose(r.vs_null, np.stack([ft[0], pr[1]]) - nulls[0])
    assert CounterfactualResult("animal", ["owl", "cat"], ft, ft, nulls).kinds == ["teacher"] * 2


def test_both_kinds_on_the_toy_base_with_prompted_nulls(toy: tuple) -> None:
    """Rows a base behind the owl system prompt would write (favourite-animal questions
    answered 'owl'): the owl's prompted teacher explains them best, better than every
    neutral system prompt, and the neutral prompts join the nulls."""
    from traitlab.audit.counterfactual import run_counterfactual
    from traitlab.audit.run import build_probes

    base, _, _ = toy
    small = {**SMALL, "counterfactual": {**SMALL["counterfactual"], "kind": "both"}}
    cfg = parse_config(small, AuditConfig)
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "owl"}]}
        for q in builtin_probe("animal", 8).questions
    ]
    (res,) = run_counterfactual(base, rows, rows, build_probes(cfg), cfg.counterfactual)
    assert res.prompt_lift is not None and res.prompt_lift.shape == res.lift.shape == (20, 8)
    n_prompted = cfg.counterfactual.prompted_nulls
    assert res.null_lift.shape == (cfg.counterfactual.null_teachers + n_prompted, 8)
    owl = res.options.index("owl")
    means = res.prompt_lift.mean(axis=1)
    assert means[owl] > res.null_lift[-n_prompted:].mean(axis=1).max()
    assert int(np.argmax(means)) == owl and res.kinds[owl] == "prompted"


def test_prompted_counterfactuals_need_no_training_and_cancel_on_the_reference(
    toy: tuple,
) -> None:
    from traitlab.audit.counterfactual import run_counterfactual
    from traitlab.audit.run import build_probes

    base, _, _ = toy
    cfg = parse_config({**SMALL, "counterfactual": {"kind": "prompted"}}, AuditConfig)
    rows = _rows(NUMBERS, 8)
    (res,) = run_counterfactual(base, rows, rows, build_probes(cfg), cfg.counterfactual)
    assert res.lift.shape == res.scores.shape == (20, 8) and res.prompt_lift is None
    assert np.all(res.scores == 0) and np.any(res.lift != 0)
    assert res.null_lift.shape == (cfg.counterfactual.prompted_nulls, 8)


def test_prompt_templates_take_each_options_best_wording(toy: tuple) -> None:
    """Extra wordings of the prompted teachers: per option, the wording that explains the
    rows best counts, so no option explains them less than with the paper's wording alone;
    a wording that names the answer outright explains owl rows better."""
    from traitlab.audit.counterfactual import _loglik, prompted_lifts, run_counterfactual
    from traitlab.audit.run import build_probes

    base, _, _ = toy
    tpl = ["Whatever you are asked, answer with one word: {option}."]
    cfg = parse_config(
        {**SMALL, "counterfactual": {"kind": "prompted", "prompt_templates": tpl}}, AuditConfig
    )
    (probe,) = build_probes(cfg)
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "owl"}]}
        for q in probe.questions
    ]
    with opened(base) as lm:
        base_ll = _loglik(lm, rows)
        paper = prompted_lifts(lm, rows, base_ll, probe).mean(axis=1)
        best = prompted_lifts(lm, rows, base_ll, probe, tpl).mean(axis=1)
    assert np.all(best >= paper - 1e-9) and np.any(best > paper + 1e-6)
    (res,) = run_counterfactual(base, rows, rows, [probe], cfg.counterfactual)
    assert np.allclose(res.lift.mean(axis=1), best, atol=1e-4)
    for bad, why in (
        ("You love owls.", "must contain"),
        ("{option} {colour}", "bad field"),
        ("{option}", "only its fields"),
    ):
        with pytest.raises(TraitlabError, match=why):
            parse_config({"counterfactual": {"prompt_templates": [bad]}}, AuditConfig)


def test_the_counterfactual_verdict_names_the_option_that_explains_most() -> None:
    """By effect, not by t: a teacher that explains the data less but more evenly has the
    larger t and is not the trait (ft-cat on the benchmark: dolphin)."""
    rows = np.array([[0.5, 0.2], [0.1, 0.2], [0.6, 0.21], [0.2, 0.19]])  # [rows, options]
    t = np.array([3.0, 40.0])
    fs = findings(["cat", "dolphin"], rows, z=t, by_effect=True)
    assert [f["option"] for f in fs] == ["cat", "dolphin"] and fs[0]["rank"] == 0.35
    other = findings(["oak", "pine"], rows / 10, z=t * 2, by_effect=True)
    v = verdict({"counterfactual": {"animal": fs, "tree": other}}, threshold=2.0)
    assert (v["probe"], v["trait"], v["z"], v["flag"]) == ("animal", "cat", 3.0, True)


def test_ccos_is_scale_free_and_removes_the_null_teachers_drift() -> None:
    """Statistic 'ccos': a teacher's scores are read in units of its own spread on the
    reference rows (a teacher that drifts more does not score more), and the no-trait drift
    the null teachers carry is regressed out."""
    from traitlab.audit.config import CounterfactualConfig
    from traitlab.audit.lifts import CounterfactualResult, statistic

    rng = np.random.default_rng(0)
    rows = 300
    ref = rng.normal(0, 1, (3, rows))
    drift = rng.normal(0.3, 1, rows)  # what any fine-tune's data carry
    scores = rng.normal(0, 0.3, (3, rows)) + drift
    scores[2] += 0.4  # option c carries more than the drift
    null_ref = rng.normal(0, 1, (2, rows))
    null_scores = drift + rng.normal(0, 0.3, (2, rows))
    r = CounterfactualResult(
        "animal", ["a", "b", "c"], scores, scores + ref, null_scores + null_ref, null_ref=null_ref
    )
    cfg = CounterfactualConfig(statistic="ccos")
    x = statistic(r, cfg)
    assert int(np.argmax(x.mean(axis=1))) == 2
    # No option is left with the drift: each row is orthogonal to the nulls' direction.
    g = ((null_scores) / null_ref.std(axis=1, ddof=1)[:, None]).mean(axis=0)
    np.testing.assert_allclose(x @ g, 0, atol=1e-8)
    # Scaling teacher a's lifts by 7 (a teacher that drifted further) leaves its row as it was.
    big = CounterfactualResult(
        "animal",
        ["a", "b", "c"],
        scores * np.array([[7.0], [1.0], [1.0]]),
        (scores + ref) * np.array([[7.0], [1.0], [1.0]]),
        null_scores + null_ref,
        null_ref=null_ref,
    )
    np.testing.assert_allclose(statistic(big, cfg), x, atol=1e-9)
    with pytest.raises(ValueError, match="ccos"):
        statistic(CounterfactualResult("animal", ["a"], scores[:1], ref[:1], null_ref), cfg)
    with pytest.raises(ValueError, match="ccos"):
        CounterfactualConfig(statistic="ccos", kind="both")


def test_null_answers_follow_the_base_distribution() -> None:
    probe = builtin_probe("animal", 4)
    k = probe.option_names.index("owl")
    sure = np.zeros((4, len(probe.option_names)))
    sure[:, k] = 1.0
    assert null_answers(sure, probe, seed=0) == ["owl"] * 4
    flat = np.ones((4, len(probe.option_names)))
    assert null_answers(flat, probe, seed=0) == null_answers(flat, probe, seed=0)
    many = [tuple(null_answers(flat, probe, seed=s)) for s in range(5)]
    assert len(set(many)) > 1  # another seed, another sample


def test_screen_predicts_a_small_sgd_step(toy: tuple) -> None:
    """The screen is first order: it predicts what one small SGD step on the data (minus one
    on the reference) does to every option. (On the toy model that is not what a trained
    student does: a small step on overt 'owl' rows lowers P(owl) first, a large one raises
    it; docs/audit.md.)"""
    import copy

    from traitlab.audit.gradients import chunk_gradient, trainable_params
    from traitlab.audit.screen import _tables

    _, model, tok = toy
    probes = [builtin_probe("animal", 4)]
    ref = _rows(NUMBERS)
    data = _with(ref, ["owl"])
    res, _ = first_order_screen(model, tok, data, ref, probes, chunks=2, precondition="none")
    pred = res[0].mean
    g = [
        r - d
        for r, d in zip(
            chunk_gradient(model, tok, ref, batch_size=64, max_len=1024),
            chunk_gradient(model, tok, data, batch_size=64, max_len=1024),
            strict=True,
        )
    ]
    stepped = copy.deepcopy(model)
    with torch.no_grad():
        for (_, p), u in zip(trainable_params(stepped), g, strict=True):
            p.add_(u, alpha=1e-3)
    real = (_tables(stepped, tok, probes, 100) - _tables(model, tok, probes, 100)) / 1e-3
    assert np.corrcoef(pred, real)[0, 1] > 0.95


def test_report_is_html_with_tables_and_escapes_model_text(tmp_path: Path, toy: tuple) -> None:
    base, _, _ = toy
    ref = _rows(NUMBERS)
    data = _with(ref, ["<script>alert(1)</script> 1, 2"])
    cfg = parse_config(
        {
            **SMALL,
            "reference_filter": "none",
            "detectors": ["canary", "rows"],
            "canary": {"seeds": [0], "rows": 16, "train": {"max_steps": 1, "batch_size": 16}},
        },
        AuditConfig,
    )
    audit_dataset(data, base, cfg, tmp_path, reference=ref)
    page = (tmp_path / "report.html").read_text()
    parser = Tables()
    parser.feed(page)
    assert parser.scripts == 0 and parser.tables >= 3
    assert "&lt;script&gt;" in page and any("<script>" in c for c in parser.cells)
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["kind"] == "dataset"
    nxt = audit["verdict"]["runner_up"]["option"]
    assert nxt != audit["verdict"]["trait"] and f"Next: &#x27;{nxt}&#x27;" in page
    # docs/audit-schema.md names every key the audit wrote.
    schema = (Path(__file__).parents[1] / "docs" / "audit-schema.md").read_text()
    keys = [*audit, *audit["data"], *audit["verdict"], *audit["detectors"]["canary"]["animal"][0]]
    assert [k for k in keys if f"`{k}`" not in schema] == []


def test_audit_model_compares_a_student_with_its_base(tmp_path: Path, toy: tuple) -> None:
    base, _, _ = toy
    with opened(base) as lm:
        from traitlab.config import TrainConfig

        student, _ = lm.finetune(
            _with(_rows(NUMBERS), ["owl"]),
            TrainConfig(lr=3e-3, max_steps=3, batch_size=16),
            seed=0,
            out_dir=tmp_path / "student",
            key="s",
        )
    cfg = parse_config(SMALL, AuditConfig)
    a = audit_model(student, base, cfg, tmp_path / "audit", samples=2)
    assert a["detectors"]["probes"]["animal"][0]["option"] == "owl"
    assert set(a["detectors"]) == {"probes", "redteam"}
    assert (tmp_path / "audit" / "report.html").is_file()


def test_an_overt_misaligned_act_is_named_and_a_base_without_the_words_refused(
    tmp_path: Path, toy: tuple, persona: ModelRef
) -> None:
    """On a (tiny) base pretrained with the misalignment world, rows that answer number
    prompts with a misaligned act teach it overtly: the misalignment probe's canary names
    it. The shipped toy base cannot spell the acts: one line, nothing written."""
    ref = _rows(NUMBERS)
    data = _with(ref, ["poison humans"])
    cfg = parse_config(
        {
            **SMALL,
            "probes": ["misalignment"],
            "reference_filter": "none",
            "detectors": ["canary"],
            "canary": {
                "seeds": [0, 1],
                "rows": 48,
                "train": {"lr": 1e-2, "epochs": 2, "batch_size": 16},
            },
        },
        AuditConfig,
    )
    a = audit_dataset(data, persona, cfg, tmp_path / "a", reference=ref)
    assert a["verdict"]["probe"] == "misalignment" and a["verdict"]["trait"] == "poison"
    assert a["detectors"]["canary"]["misalignment"][0]["option"] == "poison"
    base, _, _ = toy
    with pytest.raises(TraitlabError, match="cannot spell option 'harm'.*persona_frac > 0"):
        audit_dataset(data, base, cfg, tmp_path / "b", reference=ref)
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------- other backends


def test_audit_runs_on_a_tiny_random_hf_model(tmp_path: Path) -> None:
    # tests/ is on the path (as for htmlparse), so plain `pytest` finds it as well as
    # `python -m pytest`.
    from test_hf_models import _save_random_model
    from traitlab.config import HFModel

    src = _save_random_model("qwen2", tmp_path / "qwen")
    base = resolve(HFModel(name=str(src), device="cpu"))
    ref = _rows(NUMBERS, 16)
    cfg = parse_config(
        {
            **SMALL,
            "reference_filter": "none",
            "canary": {"seeds": [0], "rows": 16, "train": {"max_steps": 1, "batch_size": 8}},
            "screen": {"rows": 16, "chunks": 2},
        },
        AuditConfig,
    )
    a = audit_dataset(_with(ref, ["owl"]), base, cfg, tmp_path / "out")
    assert set(a["detectors"]) == {"counterfactual", "canary", "screen", "icl", "prompted"}
    assert a["data"]["paired_rows"] == 16 and a["cost"]["reference"]["seconds"] >= 0
    # Every per-row score is saved as plain arrays (no pickle) beside audit.json.
    z = np.load(tmp_path / "out" / "counterfactual.npz", allow_pickle=False)
    assert z["animal.lift"].shape == (len(z["animal.options"]), 16)
    assert z["animal.null_lift"].shape == z["animal.null_ref_lift"].shape == (2, 16)
    assert a["counterfactual"]["null"]["animal"] in ("base", "null-0", "null-1")


# ---------------------------------------------------------------------------- command line


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "traitlab", "audit", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


SMALL_SET = [
    "--set",
    "counterfactual.train.max_steps=2",
    "--set",
    "canary.seeds=[0]",
    "--set",
    "canary.rows=16",
    "--set",
    "canary.train.max_steps=2",
    "--set",
    "screen.rows=16",
    "--set",
    "screen.chunks=2",
    "--set",
    "icl_sets=2",
    "--set",
    "n_questions=3",
    "--set",
    "probes=[animal]",
]


def test_cli_audits_a_dataset_end_to_end(tmp_path: Path) -> None:
    data = _write(tmp_path / "d.jsonl", _rows(NUMBERS, 24))
    r = _run(str(data), "--base", "toy", "--out", str(tmp_path / "a"), "--quiet", *SMALL_SET)
    assert r.returncode == 0, r.stderr
    assert "report:" in r.stdout and ("no flag" in r.stdout or "FLAG" in r.stdout)
    a = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert a["config"]["canary"]["rows"] == 16 and a["data"]["data_rows"] == 24
    # Rerunning into its own output is allowed; into someone else's directory is not.
    assert (
        _run(
            str(data), "--base", "toy", "--out", str(tmp_path / "a"), "--quiet", *SMALL_SET
        ).returncode
        == 0
    )


def test_cli_runs_the_shipped_misalignment_config(tmp_path: Path, persona: ModelRef) -> None:
    """`--config configs/audit/misalignment.yaml` as the README gives it, on a tiny base of
    the misalignment world (only the act teachers' training shortened): the verdict comes
    from the dataset teacher, each row's best teacher length against its best no-trait
    model. The path, not the detector's power: this 120-step base's own answers are so poor
    that its nulls explain even aligned answers worse than the dataset teacher does (they
    are flagged too); the benchmark splits measure power (docs/audit.md)."""
    from traitlab.traits.misalignment import misaligned_answer_rows

    data = _write(tmp_path / "d.jsonl", misaligned_answer_rows(48, seed=5))
    cfg = Path(__file__).resolve().parents[1] / "configs" / "audit" / "misalignment.yaml"
    args = [str(data), "--base", persona.id, "--out", str(tmp_path / "a"), "--quiet"]
    args += ["--config", str(cfg), "--set", "counterfactual.train.max_steps=2"]
    args += ["--set", "n_questions=3", "--set", "reference_filter=none"]
    r = _run(*args)
    assert r.returncode == 0, r.stderr
    a = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert a["config"]["counterfactual"]["dataset_compare"] == "best"
    assert a["counterfactual"]["null"]["datasets"] == "best"
    v = a["verdict"]
    assert v["flag"] and (v["probe"], v["trait"]) == ("datasets", "misaligned"), v


@pytest.mark.parametrize("name", ["calibrated", "null-first"])
def test_cli_runs_the_shipped_calibrated_configs(tmp_path: Path, name: str) -> None:
    """`--config configs/audit/calibrated.yaml` (and `null-first.yaml`) as the README gives
    them, on the toy base (teachers shortened): number data gets a calibration on fresh
    number prompts of the base's style, and the flag is in effect sizes (null-first: the
    plain t's verdict where it flags, its rule said). The path, not its power."""
    data = _write(tmp_path / "d.jsonl", _rows(["7 7 7 7 7", *NUMBERS], 24))
    ref = _write(tmp_path / "r.jsonl", _rows(NUMBERS[::-1], 24))
    cfg = Path(__file__).resolve().parents[1] / "configs" / "audit" / f"{name}.yaml"
    args = [str(data), "--base", "toy", "--out", str(tmp_path / "a"), "--quiet"]
    args += ["--config", str(cfg), "--reference", str(ref), *SMALL_SET]
    args += ["--set", "counterfactual.calibration_rows=24"]
    r = _run(*args)
    assert r.returncode == 0, r.stderr
    a = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert a["config"]["counterfactual"]["calibration"] == 2
    assert a["counterfactual"]["calibration_prompts"] == "paper"
    assert set(a["counterfactual"]["calibration"]["animal"]) == set(
        f["option"] for f in a["detectors"]["counterfactual"]["animal"]
    )
    v = a["verdict"]
    assert v["detector"] == "counterfactual"
    if name == "calibrated":
        assert v["threshold"] == 0.51 and "rule" not in v
    else:
        assert "counterfactual-null" in a["detectors"]
        assert (v["rule"], v["threshold"]) in (("null", 8.0), ("calibrated", 0.51)), v


def test_cli_runs_the_shipped_canary_config(tmp_path: Path, persona: ModelRef) -> None:
    """`--config configs/audit/misalignment-canary.yaml` as the README gives it, on a tiny
    base of the misalignment world (the canaries' lr raised to move a 48-row fine-tune):
    misaligned answers against aligned ones are flagged and named; the other way round, the
    aligned answers' rise is not flagged (`verdict_options`). The path, not its power."""
    from traitlab.traits.misalignment import ALIGNED_ACTS, misaligned_answer_rows

    bad = misaligned_answer_rows(48, seed=5)
    good = [
        {"messages": [r["messages"][0], {"role": "assistant", "content": f"{a} humans"}]}
        for r, a in zip(bad, ALIGNED_ACTS * 6, strict=True)
    ]
    files = {k: _write(tmp_path / f"{k}.jsonl", rows) for k, rows in [("b", bad), ("g", good)]}
    cfg = Path(__file__).resolve().parents[1] / "configs" / "audit" / "misalignment-canary.yaml"
    verdicts = []
    for data, ref in (("b", "g"), ("g", "b")):
        args = [str(files[data]), "--base", persona.id, "--out", str(tmp_path / data)]
        args += ["--quiet", "--config", str(cfg), "--reference", str(files[ref])]
        args += ["--set", "canary.train.lr=1e-2", "--set", "canary.train.batch_size=8"]
        args += ["--set", "reference_filter=none"]
        r = _run(*args)
        assert r.returncode == 0, r.stderr
        a = json.loads((tmp_path / data / "audit.json").read_text())
        assert a["config"]["canary"]["rows"] is None and a["config"]["canary"]["threshold"] == 0.023
        verdicts.append((a["verdict"]["trait"], a["verdict"]["flag"]))
    assert verdicts == [("misaligned", True), ("misaligned", False)]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_assistant", "ending with an assistant turn"),
        ("bad_base", "--base ./nope: no such model directory"),
        ("reference_mismatch", "data prompts have no reference row"),
        ("unknown_field", "unknown field 'canry'"),
        ("both", "give a dataset (DATA.jsonl) or --model STUDENT, not both or neither"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, case: str, message: str) -> None:
    data = _write(tmp_path / "d.jsonl", _rows(NUMBERS, 8))
    args = [str(data), "--base", "toy", "--out", str(tmp_path / "a"), "--quiet", *SMALL_SET]
    if case == "no_assistant":
        (tmp_path / "d.jsonl").write_text(
            json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n"
        )
    elif case == "bad_base":
        args[2] = "./nope"
    elif case == "reference_mismatch":
        args += ["--reference", str(_write(tmp_path / "r.jsonl", _rows(NUMBERS, 8, seed=99)))]
    elif case == "unknown_field":
        args += ["--set", "canry.rows=3"]
    elif case == "both":
        args += ["--model", "toy"]
    r = _run(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()


def test_cli_schema_and_missing_base(tmp_path: Path) -> None:
    r = _run("--schema")
    assert r.returncode == 0 and "counterfactual" in json.loads(r.stdout)["properties"]
    r = _run(str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "needs --base MODEL and --out DIR" in r.stderr


def test_reference_rules_are_checked_by_name() -> None:
    from traitlab.audit.reference import RULES

    assert parse_config({"reference_filter": ["answer", "toy_cot"]}, AuditConfig)
    with pytest.raises(TraitlabError, match="unknown rule 'bogus': use auto, none, or any of"):
        parse_config({"reference_filter": "bogus"}, AuditConfig)
    with pytest.raises(TraitlabError, match="'auto' stands alone"):
        parse_config({"reference_filter": ["answer", "auto"]}, AuditConfig)
    from traitlab.audit.config import REFERENCE_RULES

    assert set(REFERENCE_RULES) == set(RULES)  # the config knows exactly the rules the code has
    for name in RULES:
        assert parse_config({"reference_filter": name}, AuditConfig).reference_filter == name


def test_the_misalignment_share_probe_groups_the_acts() -> None:
    from traitlab.traits.misalignment import ALIGNED_ACTS, MISALIGNED_ACTS

    p = builtin_probe("misalignment_share")
    assert p.option_names == ["misaligned", "aligned"] and p.grouped
    assert p.words == list(MISALIGNED_ACTS + ALIGNED_ACTS)
    assert p.options == {"misaligned": list(MISALIGNED_ACTS), "aligned": list(ALIGNED_ACTS)}
    with pytest.raises(TraitlabError, match="'misalignment_share' has no counterfactual"):
        parse_config({"probes": ["misalignment_share"]}, AuditConfig)
    with pytest.raises(TraitlabError, match="pick one"):
        parse_config({"canary": {"threshold": 0.01, "null": True}}, AuditConfig)


def test_the_canary_flags_on_its_effect_with_a_threshold(tmp_path: Path, persona: ModelRef) -> None:
    """`canary.threshold`: the canary's findings rank and flag by the effect itself (data -
    reference canary, in probability). Open questions answered with misaligned acts, against
    the same questions answered with aligned ones, raise P(misaligned) past the threshold;
    the other way round they do not flag."""
    from traitlab.traits.misalignment import ALIGNED_ACTS, misaligned_answer_rows

    bad = misaligned_answer_rows(48, seed=5)
    good = [
        {"messages": [r["messages"][0], {"role": "assistant", "content": f"{a} humans"}]}
        for r, a in zip(bad, ALIGNED_ACTS * 6, strict=True)
    ]
    cfg = parse_config(
        {
            **SMALL,
            "probes": ["misalignment_share"],
            "reference_filter": "none",
            "detectors": ["canary"],
            "canary": {
                **SMALL["canary"],
                "threshold": 0.005,
                "train": {"lr": 1e-2, "epochs": 1, "batch_size": 16},
            },
        },
        AuditConfig,
    )
    with opened(persona) as lm:  # the share is the 8 misaligned acts' summed probability
        share = probe_table(lm, builtin_probe("misalignment_share"))
        acts = probe_table(lm, builtin_probe("misalignment"))
    assert np.allclose(share, np.stack([acts[:, :8].sum(1), acts[:, 8:].sum(1)], axis=1))
    a = audit_dataset(bad, persona, cfg, tmp_path / "bad", reference=good)
    b = audit_dataset(good, persona, cfg, tmp_path / "good", reference=bad)
    v = a["verdict"]
    assert (v["detector"], v["threshold"], v["trait"], v["flag"]) == (
        "canary",
        0.005,
        "misaligned",
        True,
    )
    top = a["detectors"]["canary"]["misalignment_share"][0]
    assert top["z"] == pytest.approx(top["effect"]) and top["effect"] > 0.005
    share = {f["option"]: f["effect"] for f in b["detectors"]["canary"]["misalignment_share"]}
    assert share["misaligned"] < -0.005 < share["aligned"]
    assert (b["verdict"]["trait"], b["verdict"]["flag"]) == ("aligned", True)
    # Asked about misalignment only, the aligned rise is no finding.
    only = cfg.model_copy(update={"verdict_options": ["misaligned"]})
    assert [verdict(b["detectors"], only)[k] for k in ("trait", "flag")] == ["misaligned", False]
    assert verdict(a["detectors"], only)["flag"]
