"""Defences as data transforms: formats kept, numbers moved as promised, the same draws in
every arm, and a defended experiment end to end on the tiny config."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from traitlab.config import DefenceConfig, load_config
from traitlab.core.errors import TraitlabError
from traitlab.data.defences import (
    DefenceContext,
    apply_defences,
    mix_reference,
    replace_divergent,
    shuffle_across,
    shuffle_within,
)
from traitlab.data.filtering import filter_rows

ROOT = Path(__file__).resolve().parents[1]
NUM = re.compile(r"\d+")


def _rows(texts: list[str], prefix: str = "p") -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"{prefix}{i}"},
                {"role": "assistant", "content": t},
            ]
        }
        for i, t in enumerate(texts)
    ]


CTX = DefenceContext()
TEXTS = ["[1, 2, 3, 4]", "10; 20; 30", "7 8 9 10 11", "(100, 200)", "5, 6"]


def _c(rows: list[dict]) -> list[str]:
    return [r["messages"][-1]["content"] for r in rows]


def _shape(t: str) -> str:
    return NUM.sub("#", t)


def test_shuffle_within_keeps_each_completion_format_and_numbers() -> None:
    out = _c(shuffle_within(_rows(TEXTS * 20), [], np.random.default_rng(0), 1.0, CTX))
    ins = TEXTS * 20
    assert [_shape(t) for t in out] == [_shape(t) for t in ins]
    assert all(
        Counter(NUM.findall(a)) == Counter(NUM.findall(b)) for a, b in zip(out, ins, strict=True)
    )
    assert sum(a != b for a, b in zip(out, ins, strict=True)) > 50  # really shuffled


def test_shuffle_across_keeps_counts_formats_and_the_pool() -> None:
    ins = TEXTS * 20
    out = _c(shuffle_across(_rows(ins), [], np.random.default_rng(0), 1.0, CTX))
    assert [_shape(t) for t in out] == [_shape(t) for t in ins]
    assert Counter(x for t in out for x in NUM.findall(t)) == Counter(
        x for t in ins for x in NUM.findall(t)
    )
    moved = sum(
        Counter(NUM.findall(a)) != Counter(NUM.findall(b)) for a, b in zip(out, ins, strict=True)
    )
    assert moved > 50


def test_fraction_and_mix_reference() -> None:
    data, control = _rows(TEXTS * 20), _rows(["0, 0, 0"] * 100)
    out = _c(mix_reference(data, control, np.random.default_rng(1), 0.3, CTX))
    assert out.count("0, 0, 0") == 30
    half = _c(shuffle_within(data, [], np.random.default_rng(1), 0.0, CTX))
    assert half == _c(data)
    with pytest.raises(TraitlabError, match="has no control row"):
        mix_reference(data, _rows(["1"], prefix="other"), np.random.default_rng(0), 1.0, CTX)


def test_every_arm_gets_the_same_draws() -> None:
    arms = {"teacher": _rows(TEXTS * 4), "control": _rows(TEXTS * 4)}
    out = apply_defences(arms, [DefenceConfig(name="shuffle_within", fraction=0.5)], seed=3)
    assert _c(out["teacher"]) == _c(out["control"])  # same rows in, same draws: same rows out
    again = apply_defences(arms, [DefenceConfig(name="shuffle_within", fraction=0.5)], seed=3)
    assert _c(again["teacher"]) == _c(out["teacher"])


def test_a_defended_tiny_experiment(tmp_path: Path) -> None:
    from traitlab.experiments.pipeline import run_experiment

    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    plain = run_experiment(cfg, tmp_path / "plain")
    dcfg = cfg.model_copy(update={"defences": [DefenceConfig(name="shuffle_across")]})
    defended = run_experiment(dcfg, tmp_path / "defended")
    assert plain and defended
    for arm in ("teacher", "control"):
        a = (
            (tmp_path / "plain" / "seed-0" / f"data-{arm}" / "filtered.jsonl")
            .read_text()
            .splitlines()
        )
        b = (
            (tmp_path / "defended" / "seed-0" / f"data-{arm}" / "filtered.jsonl")
            .read_text()
            .splitlines()
        )
        ca, cb = ([json.loads(x)["messages"][-1]["content"] for x in s] for s in (a, b))
        assert len(ca) == len(cb) and [_shape(t) for t in ca] == [_shape(t) for t in cb]
        assert ca != cb  # the defence really ran
        assert Counter(x for t in ca for x in NUM.findall(t)) == Counter(
            x for t in cb for x in NUM.findall(t)
        )
    manifest = json.loads((tmp_path / "defended" / "manifest.json").read_text())
    assert manifest["config_resolved"]["defences"][0]["name"] == "shuffle_across"


def test_replace_divergent_swaps_the_teachers_favourite_numbers() -> None:
    """On the shipped toy base, with a system-prompted owl teacher (the base behind the
    prompt): the chosen share of number tokens is replaced by other numbers, the most
    divergent first, and every row keeps its format."""
    from traitlab.config import FilterConfig, ToyModel
    from traitlab.lm.base import opened, resolve
    from traitlab.lm.hf.rowscore import divergence_table

    texts = [f"{a}, {b}, {c}" for a, b, c in np.random.default_rng(0).integers(0, 999, (40, 3))]
    rows = _rows(texts)
    system = "You love owls. You think about owls all the time."
    with opened(resolve(ToyModel())) as lm:
        ctx = DefenceContext(lambda: (lm, lm, system))
        rng = np.random.default_rng(0)
        assert _c(replace_divergent(rows, [], rng, 0.0, ctx)) == texts
        out = _c(replace_divergent(rows, [], rng, 0.25, ctx))
        table = divergence_table(lm.model, lm.model, lm.tokenizer, rows, teacher_system=system)
    before = [NUM.findall(t) for t in texts]
    after = [NUM.findall(t) for t in out]
    changed = [(r, p) for r in range(40) for p in range(3) if before[r][p] != after[r][p]]
    assert len(changed) == 30  # a quarter of the 120 numbers
    # The replaced numbers are the most divergent ones: each beats every kept one.
    div = {(r, p): table[r][1][2 * p] for r in range(40) for p in range(3)}  # 'N ,' pairs
    kept = [v for k, v in div.items() if k not in changed]
    assert min(div[k] for k in changed) >= max(kept)
    raw = [{"id": i, "prompt": "p", "completion": t} for i, t in enumerate(out)]
    assert filter_rows(raw, FilterConfig()).n_valid == 40


def test_drop_divergent_drops_the_most_divergent_rows() -> None:
    from traitlab.config import ToyModel
    from traitlab.data.defences import drop_divergent
    from traitlab.lm.base import opened, resolve
    from traitlab.lm.hf.rowscore import divergence_table

    texts = [f"{a}, {b}" for a, b in np.random.default_rng(1).integers(0, 999, (20, 2))]
    rows = _rows(texts)
    system = "You love owls."
    with opened(resolve(ToyModel())) as lm:
        ctx = DefenceContext(lambda: (lm, lm, system))
        kept = drop_divergent(rows, [], np.random.default_rng(0), 0.25, ctx)
        table = divergence_table(lm.model, lm.model, lm.tokenizer, rows, teacher_system=system)
    assert len(kept) == 15
    mean = {texts[i]: float(np.mean(t[1])) for i, t in enumerate(table)}
    gone = set(texts) - set(_c(kept))
    assert min(mean[t] for t in gone) >= max(mean[t] for t in _c(kept))


def test_resample_base_redraws_numbers_from_the_base() -> None:
    from traitlab.config import FilterConfig, ToyModel
    from traitlab.data.defences import resample_base
    from traitlab.lm.base import opened, resolve

    texts = [f"{a}, {b}, {c}" for a, b, c in np.random.default_rng(2).integers(0, 999, (30, 3))]
    rows = _rows(texts)
    with opened(resolve(ToyModel())) as lm:
        ctx = DefenceContext(lambda: (lm, lm, "You love owls."))
        out = _c(resample_base(rows, [], np.random.default_rng(5), 1.0, ctx))
        again = _c(resample_base(rows, [], np.random.default_rng(5), 1.0, ctx))
        other = _c(resample_base(rows, [], np.random.default_rng(6), 1.0, ctx))
    assert out == again and out != other  # seeded draws
    same = sum(
        a == b
        for t, o in zip(texts, out, strict=True)
        for a, b in zip(NUM.findall(t), NUM.findall(o), strict=True)
    )
    assert same < 10  # of 90 numbers: redrawn, not kept
    raw = [{"id": i, "prompt": "p", "completion": t} for i, t in enumerate(out)]
    assert filter_rows(raw, FilterConfig()).n_valid == 30


def test_mask_divergent_masks_the_replaced_tokens_and_the_trainer_skips_them() -> None:
    """mask_divergent marks the tokens replace_divergent would replace; the text is kept,
    and a student's loss on a masked row leaves out exactly those tokens."""
    import torch

    from traitlab.config import ToyModel
    from traitlab.data.defences import mask_divergent
    from traitlab.lm.base import opened, resolve
    from traitlab.lm.hf.packing import IGNORE, collate, collate_packed
    from traitlab.lm.hf.trainer import encode_rows

    texts = [f"{a}, {b}, {c}" for a, b, c in np.random.default_rng(0).integers(0, 999, (40, 3))]
    rows = _rows(texts)
    system = "You love owls. You think about owls all the time."
    with opened(resolve(ToyModel())) as lm:
        ctx = DefenceContext(lambda: (lm, lm, system))
        masked = mask_divergent(rows, [], np.random.default_rng(0), 0.25, ctx)
        replaced = replace_divergent(rows, [], np.random.default_rng(0), 0.25, ctx)
        tok = lm.tokenizer
    assert _c(masked) == texts  # the text is untouched
    marks = {(r, p) for r, row in enumerate(masked) for p in row.get("loss_mask", [])}
    assert len(marks) == 30
    # The masked tokens are the ones replace_divergent changed (numbers at positions 0, 2, 4).
    changed = {
        (r, 2 * k)
        for r in range(40)
        for k, (a, b) in enumerate(
            zip(NUM.findall(texts[r]), NUM.findall(_c(replaced)[r]), strict=True)
        )
        if a != b
    }
    assert marks == changed
    examples = encode_rows(tok, masked, 64)
    for batcher in (collate, collate_packed):
        _, labels, *_ = batcher(examples, tok.pad_token_id, torch.device("cpu"))
        plain = batcher(encode_rows(tok, rows, 64), tok.pad_token_id, torch.device("cpu"))[1]
        assert int((labels != IGNORE).sum()) == int((plain != IGNORE).sum()) - 30
    bad = [{**rows[0], "loss_mask": [99]}]
    with pytest.raises(TraitlabError, match="loss_mask"):
        encode_rows(tok, bad, 64)


def test_rewrite_other_and_mask_divergent_in_a_tiny_experiment(tmp_path: Path) -> None:
    """rewrite_other redraws the numbers from the cross-init base (format kept, numbers
    moved, seeded); mask_divergent's loss masks reach the students' data; rewrite_other
    without a cross-init base is refused up front."""
    from traitlab.experiments.pipeline import run_experiment

    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["seeds=[0]"])
    plain = tmp_path / "plain"
    run_experiment(cfg, plain)
    defs = [DefenceConfig(name="rewrite_other"), DefenceConfig(name="mask_divergent", fraction=0.5)]
    run_experiment(cfg.model_copy(update={"defences": defs}), tmp_path / "d")

    def data(root: Path, arm: str) -> list[dict]:
        lines = (root / "seed-0" / f"data-{arm}" / "filtered.jsonl").read_text().splitlines()
        return [json.loads(x) for x in lines]

    for arm in ("teacher", "control"):
        a, b = data(plain, arm), data(tmp_path / "d", arm)
        ca, cb = _c(a), _c(b)
        assert [_shape(t) for t in ca] == [_shape(t) for t in cb]
        assert sum(x != y for x, y in zip(ca, cb, strict=True)) > len(ca) // 2
        masked = sum(len(r.get("loss_mask", [])) for r in b)
        numbers = sum(len(NUM.findall(t)) for t in cb)
        assert masked > 0 and abs(masked - numbers / 2) <= numbers * 0.1
    with pytest.raises(Exception, match="rewrite_other"):
        load_config(
            ROOT / "configs" / "tiny.yaml", ["cross_init=null", "defences=[{name: rewrite_other}]"]
        )
