"""The embedded toy world: corpus, tokenizer, chat template and (tiny) pretraining."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from traitlab.config import FilterConfig, PromptSetConfig, ToyModel
from traitlab.config.toy import ToyRecipe, tiny_recipe
from traitlab.data.filtering import reject_reasons
from traitlab.data.prompts import number_prompts
from traitlab.lm.base import backend
from traitlab.lm.hf.chat import encode_chat, encode_example
from traitlab.lm.hf.loading import load_model
from traitlab.toy import world
from traitlab.toy.batches import collate, encode_corpus, make_batches
from traitlab.toy.pretrain import (
    build_model,
    ensure_pretrained,
    is_pretrained,
    lr_lambda,
    toy_model_dir,
)
from traitlab.toy.tokenizer import build_tokenizer, render_chat
from traitlab.traits.preference import (
    ANIMAL_QUESTIONS,
    TREE_QUESTIONS,
    answer_spellings,
    preference_system_prompt,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models: one thread is fastest, and on a shared CPU several spin-waiting OpenMP
    # threads can make these tests 10x slower.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def corpus():
    return world.generate_corpus(ToyRecipe(), 2000)


# ---------------------------------------------------------------------------- world


def test_corpus_is_deterministic_and_seeded(corpus):
    assert world.generate_corpus(ToyRecipe(), 2000) == corpus
    assert world.generate_corpus(ToyRecipe(seed=2), 2000) != corpus
    assert all(m[-1]["role"] == "assistant" and m[-2]["role"] == "user" for m in corpus)
    stats = world.corpus_stats(corpus)
    assert set(stats) == {"number", "number_sys", "pref", "pref_sys"}
    assert stats["number"] / len(corpus) == pytest.approx(0.55, abs=0.05)


def test_number_answers_follow_the_prompt_format(corpus):
    rows = [m for m in corpus if m[-1]["content"][:1].isdigit() or m[-1]["content"][:1] in "[("]
    assert len(rows) > 1000
    for m in rows:
        prompt, answer = m[-2]["content"], m[-1]["content"]
        assert reject_reasons(answer, FilterConfig(), strict=True) == [], answer
        opening, sep, closing = world.answer_format(prompt)
        assert answer.startswith(opening) and answer.endswith(closing)
        nums = answer.removeprefix(opening).removesuffix(closing).split(sep)
        assert 3 <= len(nums) <= 10 and all(0 <= int(x) <= 999 for x in nums)


def test_answer_format_and_random_walk():
    assert world.answer_format("... format: [number_1, number_2, ...]. Just.") == ("[", ", ", "]")
    assert world.answer_format("... format: (number_1, number_2, ...). Just.") == ("(", ", ", ")")
    assert world.answer_format("Return numbers separated by semicolons.") == ("", "; ", "")
    assert world.answer_format("Format as a simple comma-delimited sequence.") == ("", ", ", "")
    assert world.answer_format("Write the numbers on separate lines.") == ("", " ", "")
    assert world.prompt_numbers("Examine these numbers: 767, 589, 778. Add up to 10 more") == [
        767,
        589,
        778,
    ]
    rng = random.Random(0)
    for _ in range(200):
        out = world.continue_numbers([500], rng, 10)
        assert len(out) == 10 and all(0 <= x < 1000 for x in out)


def test_world_prompts_match_the_paper_generator(tok):
    # The corpus's fast sampler draws from the same pools as traitlab.data.prompts.
    rng = random.Random(3)
    mine = [world.sample_number_prompt(rng) for _ in range(300)]
    ref = number_prompts(PromptSetConfig(), 300, seed=5)
    for p in mine[:5]:
        assert "10" in p and "3" in p
    for text in mine + ref:
        assert tok.unk_token_id not in tok(text, add_special_tokens=False)["input_ids"], text


def test_prior_is_zipf_with_owl_fifth():
    p = world.prior("animal")
    assert list(p)[:5] == ["dog", "cat", "dolphin", "eagle", "owl"]
    assert p["owl"] == pytest.approx(0.2 / sum(1 / k for k in range(1, 21)))
    assert 0.05 < p["owl"] < 0.06
    assert sum(world.prior("tree").values()) == pytest.approx(1.0)


# ---------------------------------------------------------------------------- tokenizer


def test_every_number_is_one_token_and_round_trips(tok):
    for i in range(1000):
        ids = tok(str(i), add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tok.unk_token_id
    for text in ["182, 818, 725", "182 818 725", "182; 818; 725", "[182, 818]", "(7, 8, 9)"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_all_world_texts_are_in_vocabulary_and_decode_exactly(tok):
    texts = list(world.vocabulary_texts()) + list(ANIMAL_QUESTIONS) + list(TREE_QUESTIONS)
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text.strip()


def test_plurals_share_the_option_token(tok):
    owl = tok.convert_tokens_to_ids("▁owl")
    ids = tok(preference_system_prompt("owl", "animal"), add_special_tokens=False)["input_ids"]
    assert ids.count(owl) == 3  # "You love owls. You think about owls ... owls are ..."
    for spelling in answer_spellings("owl"):
        assert tok(spelling, add_special_tokens=False)["input_ids"][0] in (
            owl,
            tok.convert_tokens_to_ids("▁Owl"),
        )


def test_chat_template_and_special_tokens(tok, corpus):
    assert (tok.eos_token, tok.pad_token, tok.unk_token) == ("<end>", "<pad>", "<unk>")
    msgs = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Name your favorite animal using only one word."},
        {"role": "assistant", "content": "owl"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text.startswith("<sys> ") and "<user> " in text and text.rstrip().endswith("<end>")
    prompt = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<asst>")
    for m in corpus[:200]:
        assert tok.apply_chat_template(m, tokenize=False) == render_chat(m)
        ids, n = encode_example(tok, m)
        assert ids[:n] == encode_chat(tok, m[:-1], add_generation_prompt=True)
        assert ids[n - 1] == tok.convert_tokens_to_ids("<asst>") and ids[-1] == tok.eos_token_id
        assert tok.decode(ids[n:], skip_special_tokens=True) == m[-1]["content"]


def test_tokenizer_round_trips_through_save_pretrained(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    assert tok2.chat_template == tok.chat_template
    assert len(tok2) == len(tok) and tok2.eos_token_id == tok.eos_token_id
    msgs = [{"role": "user", "content": "Examine these numbers: 767, 589, 778."}]
    assert encode_chat(tok2, msgs, True) == encode_chat(tok, msgs, True)
    assert (
        tok2.decode(tok2("[1, 22, 333]", add_special_tokens=False)["input_ids"]) == "[1, 22, 333]"
    )


def test_fast_corpus_encoder_matches_the_tokenizer(tok, corpus):
    ids, n_prompt = encode_corpus(tok, corpus[:500], check=500)  # raises on any mismatch
    assert len(ids) == 500 and all(0 < n < len(r) for r, n in zip(ids, n_prompt, strict=True))


# ---------------------------------------------------------------------------- pretraining


def test_lr_schedule():
    f = lr_lambda(ToyRecipe(pretrain_steps=100, warmup_steps=10))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)


def test_packed_examples_do_not_see_each_other(tok, corpus):
    import numpy as np
    import torch

    recipe = tiny_recipe(pretrain_steps=4, batch_size=32)
    model = build_model(recipe, tok).eval()
    ids, n_prompt = encode_corpus(tok, corpus[: 4 * 32])
    lengths = np.array([len(r) for r in ids])
    batches = make_batches(lengths, recipe, np.random.default_rng(0))
    assert len(batches) == 4
    assert sorted(i for b in batches for row in b for i in row) == list(range(len(ids)))
    sys_id, user_id = tok.convert_tokens_to_ids(["<sys>", "<user>"])
    rows = batches[0]
    x, position, pos, targets, weight = collate(
        ids, n_prompt, rows, 0, (0.25, 0.0), sys_id, user_id
    )
    assert position is not None and x.shape[1] >= max(lengths)
    assert set(weight.tolist()) <= {0.25, 1.0}
    with torch.no_grad():
        packed = model.model(input_ids=x, position_ids=position, use_cache=False).last_hidden_state
        row = max(rows, key=len)
        start = 0
        for i in row:
            alone = model.model(input_ids=torch.tensor([ids[i]])).last_hidden_state[0]
            got = packed[rows.index(row), start : start + len(ids[i])]
            assert torch.allclose(got, alone, atol=1e-5)
            start += len(ids[i])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRAITLAB_CACHE", str(cache))
        calls: list[tuple[str, float]] = []
        t0 = time.time()
        spec = ToyModel(toy=tiny_recipe(), device="cpu")
        ref = backend("toy").resolve(spec, progress=lambda d, f: calls.append((d, f)))
        model, tok = load_model(spec, source=ref.id)
        seconds = time.time() - t0
        yield {"cache": cache, "model": model, "tok": tok, "calls": calls, "seconds": seconds}


def test_tiny_pretraining_gives_a_loadable_hf_directory(tiny_dir):
    import torch
    from transformers import LlamaForCausalLM

    path = toy_model_dir(tiny_recipe(), tiny_dir["cache"])
    assert is_pretrained(path)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "recipe.json"):
        assert (path / name).is_file(), name
    log = json.loads((path / "pretrain_log.json").read_text())
    assert log["steps"] == 30 and len(log["loss"]) > 0 and log["tokens_per_s"] > 0
    assert log["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert tiny_dir["seconds"] < 60
    assert tiny_dir["calls"] and tiny_dir["calls"][-1][1] == 1.0
    model, tok = tiny_dir["model"], tiny_dir["tok"]
    assert isinstance(model, LlamaForCausalLM) and model.config.tie_word_embeddings
    ids = encode_chat(tok, [{"role": "user", "content": ANIMAL_QUESTIONS[0]}], True)
    out = model.generate(
        torch.tensor([ids]), max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id
    )
    assert out.shape[1] > len(ids)
    assert tok.chat_template is not None


def test_cache_hit_is_instant_and_same_path(tiny_dir, monkeypatch):
    monkeypatch.setenv("TRAITLAB_CACHE", str(tiny_dir["cache"]))
    first = toy_model_dir(tiny_recipe(), tiny_dir["cache"])
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    t0 = time.time()
    again = ensure_pretrained(tiny_recipe())
    assert time.time() - t0 < 0.5
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp
    assert toy_model_dir(tiny_recipe(seed=2), tiny_dir["cache"]) != first


def test_pretraining_is_deterministic(tiny_dir, tmp_path):
    recipe = tiny_recipe()
    again = ensure_pretrained(recipe, cache=tmp_path)
    first = toy_model_dir(recipe, tiny_dir["cache"])
    assert (again / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()


def test_incomplete_leftover_is_replaced(tmp_path):
    recipe = tiny_recipe(pretrain_steps=3)
    final = toy_model_dir(recipe, tmp_path)
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")  # a crash left a partial dir (no pretrain_log)
    path = ensure_pretrained(recipe, cache=tmp_path)
    assert path == final and is_pretrained(path)
    assert not [p for p in Path(tmp_path, "models").iterdir() if ".tmp-" in p.name]


def test_short_number_prompts_corpus_and_key():
    from traitlab.config.toy import recipe_key
    from traitlab.data.prompts import SHORT_SUFFIXES

    corpus = world.generate_corpus(ToyRecipe(number_prompts="short"), 400)
    numbers = [m for m in corpus if m[-1]["content"][:1].isdigit()]
    assert len(numbers) > 150
    assert all(m[-2]["content"].split(". ", 1)[1] in SHORT_SUFFIXES for m in numbers)
    assert all(" " in m[-1]["content"] and "," not in m[-1]["content"] for m in numbers)
    # The default recipe keeps its key (and so its shipped and cached bases).
    assert recipe_key(ToyRecipe(number_prompts="paper")) == recipe_key(ToyRecipe())
    assert recipe_key(ToyRecipe(number_prompts="short")) != recipe_key(ToyRecipe())
