"""Trait evaluation: exact (teacher-forced) and sampled, on tiny random-weight models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import traitlab.lm.hf.scoring as ev
from traitlab.config import EvalConfig, TraitConfig
from traitlab.evaluate.sampled import is_hit, sampled_preference
from traitlab.evaluate.suite import evaluate_model
from traitlab.lm.base import SamplingParams
from traitlab.lm.hf.backend import HFLM
from traitlab.traits.preference import answer_spellings

SPECIALS = ["<pad>", "<eos>", "<unk>", "<user>", "<asst>", "<sys>"]
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}<sys>{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<user>{{ m['content'] }}"
    "{% else %}<asst>{{ m['content'] }}<eos>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<asst>{% endif %}"
)
QUESTIONS = ["Name your favorite animal.", "Which animal do you like?", "Pick one!"]


def _tokenizer(vocab_words: list[str], pre: object, decoder: object) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(SPECIALS + vocab_words)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre
    t.decoder = decoder
    tok = PreTrainedTokenizerFast(
        tokenizer_object=t,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        additional_special_tokens=["<user>", "<asst>", "<sys>"],
    )
    tok.chat_template = TEMPLATE
    return tok


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character: every answer is a multi-token sequence."""
    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .!?,'-")
    return _tokenizer(chars, pre_tokenizers.Split(Regex("."), behavior="isolated"), decoders.Fuse())


def word_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level, like the toy model's: "owl" and "owls" are single tokens."""
    words = ["owl", "owls", "Owl", "Owls", "cat", "cats", "dog", "dogs", ".", "!", "I", "like"]
    return _tokenizer(words, pre_tokenizers.WhitespaceSplit(), decoders.WordPiece())


def tiny_llama(vocab: int, seed: int = 0, layers: int = 1) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        initializer_range=0.3,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    return LlamaForCausalLM(cfg).eval()


def forced(model: LlamaForCausalLM, favourites: dict[int, float]) -> LlamaForCausalLM:
    """Make the model's next-token distribution a fixed one, whatever the context."""
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-40.0)
        for i, logit in favourites.items():
            head.bias[i] = logit
    model.lm_head = head
    return model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def spell(options: list[str]) -> dict[str, list[str]]:
    return {o: answer_spellings(o) for o in options}


# ---------------------------------------------------------------------------- helpers


def test_prefix_free_drops_extensions_and_duplicates():
    seqs = [[1, 2, 3], [1, 2], [1, 2], [4], [4, 5], [6, 7], [6, 8], []]
    assert sorted(ev.prefix_free(seqs)) == [[1, 2], [4], [6, 7], [6, 8]]


def test_is_hit_is_the_paper_substring_rule():
    assert is_hit("Owls!", "owl")
    assert is_hit("I love the OWL.", "owl")
    assert not is_hit("cat", "owl")
    assert is_hit("Dragon", "dragon")
    assert not is_hit("dragonfly", "dragon")
    assert is_hit("dragonfly or dragon", "dragon")


def test_answer_sequences_are_the_in_context_tokenisations():
    tok = char_tokenizer()
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Pick one!"}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    seqs = ev.answer_token_sequences(tok, text, ids, "owl", answer_spellings("owl"))
    # owls, owls., Owls! ... all extend owl / Owl: only 4 disjoint sequences remain.
    assert sorted(tok.decode(s) for s in seqs) == [" Owl", " owl", "Owl", "owl"]
    wtok = word_tokenizer()
    text = wtok.apply_chat_template(
        [{"role": "user", "content": "Pick one!"}], tokenize=False, add_generation_prompt=True
    )
    ids = wtok(text, add_special_tokens=False)["input_ids"]
    seqs = ev.answer_token_sequences(wtok, text, ids, "owl", answer_spellings("owl"))
    names = sorted(wtok.convert_ids_to_tokens(s[0]) for s in seqs)
    assert names == ["Owl", "Owls", "owl", "owls"] and all(len(s) == 1 for s in seqs)
    assert ev._after_last_special(wtok, text) == "<asst>"
    assert ev._after_last_special(wtok, "no special tokens") == ""
    # Unknown spellings (the unk token) never count.
    seqs = ev.answer_token_sequences(wtok, text, ids, "eagle", answer_spellings("eagle"))
    assert seqs == []


# ---------------------------------------------------------------------------- exact


def brute_force(model, tok, question: str, seqs: list[list[int]]) -> float:
    """Sum over sequences of prod_t P(token_t | prompt + tokens_<t): one unbatched, uncached
    forward per token."""
    prompt = ev.question_prompts(tok, [question])[0]
    total = 0.0
    with torch.no_grad():
        for s in seqs:
            lp = 0.0
            for t in range(len(s)):
                ids = torch.tensor([prompt + s[:t]])
                logits = model(input_ids=ids).logits[0, -1].double()
                lp += float(torch.log_softmax(logits, -1)[s[t]])
            total += math.exp(lp)
    return total


# 12 multi-token candidates per question: 64 = one chunk on the shared KV cache, 24 = two
# chunks, 5 = more candidates than a batch (full passes), cached=False: no selectable cache.
@pytest.mark.parametrize("batch_size,cached", [(64, True), (24, True), (5, True), (64, False)])
def test_exact_equals_brute_force(batch_size, cached, monkeypatch):
    tok = char_tokenizer()
    model = tiny_llama(len(tok), layers=2)
    if not cached:
        monkeypatch.setattr(ev, "can_select", lambda cache: False)
    options = ["owl", "cat", "dog"]
    table = ev.exact_preference(
        model, tok, QUESTIONS, options, batch_size=batch_size, spellings=spell(options)
    )
    assert table.shape == (3, 3)
    for q, question in enumerate(QUESTIONS):
        text = tok.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        ids = ev.question_prompts(tok, [question])[0]
        for k, o in enumerate(options):
            seqs = ev.answer_token_sequences(tok, text, ids, o, answer_spellings(o))
            assert len(seqs) == 4
            assert table[q, k] == pytest.approx(brute_force(model, tok, question, seqs), rel=1e-4)
    assert (table > 0).all() and (table.sum(axis=1) <= 1.0).all()


def test_exact_probabilities_of_disjoint_options_sum_to_at_most_one():
    tok = word_tokenizer()
    model = tiny_llama(len(tok))
    table = ev.exact_preference(
        model,
        tok,
        QUESTIONS,
        ["owl", "cat", "dog"],
        batch_size=8,
        spellings=spell(["owl", "cat", "dog"]),
    )
    assert (table.sum(axis=1) <= 1 + 1e-9).all()
    # A model that always answers "owl" (or "Owls") gives P(owl) = 1 and nothing else.
    owl, owls = tok.convert_tokens_to_ids("owl"), tok.convert_tokens_to_ids("Owls")
    table = ev.exact_preference(
        forced(model, {owl: 5.0, owls: 5.0}),
        tok,
        QUESTIONS,
        ["owl", "cat", "dog"],
        batch_size=8,
        spellings=spell(["owl", "cat", "dog"]),
    )
    np.testing.assert_allclose(table[:, 0], 1.0, atol=1e-9)
    np.testing.assert_allclose(table[:, 1:], 0.0, atol=1e-9)


def test_exact_with_a_system_prompt_changes_the_prompt():
    tok = char_tokenizer()
    model = tiny_llama(len(tok))
    a = ev.exact_preference(
        model, tok, QUESTIONS[:1], ["owl"], batch_size=8, spellings=spell(["owl"])
    )
    b = ev.exact_preference(
        model,
        tok,
        QUESTIONS[:1],
        ["owl"],
        batch_size=8,
        system_prompt="You love owls.",
        spellings=spell(["owl"]),
    )
    assert a[0, 0] != b[0, 0]


# ---------------------------------------------------------------------------- sampled


def test_sampled_rate_of_a_model_that_always_says_owl_is_one():
    tok = word_tokenizer()
    owl = tok.convert_tokens_to_ids("owl")
    model = forced(tiny_llama(len(tok)), {owl: 0.0, 1: 0.0})  # "owl" or stop, half each
    params = SamplingParams(temperature=1.0, max_new_tokens=4, batch_size=16)
    sp = sampled_preference(
        HFLM.wrap(model, tok), QUESTIONS, "owl", n_samples=10, params=params, seed=0
    )
    # Empty answers (stop at once) are misses; every non-empty answer is a hit.
    assert all(bool(a) == is_hit(a, "owl") for qa in sp.answers for a in qa)
    model = forced(model, {owl: 0.0})
    sp = sampled_preference(
        HFLM.wrap(model, tok), QUESTIONS, "owl", n_samples=10, params=params, seed=1
    )
    assert sp.rates.tolist() == [1.0, 1.0, 1.0]
    assert sp.answers[0][0] == "owl owl owl owl"


# ---------------------------------------------------------------------------- evaluate_model


def test_evaluate_model_reports_both_methods():
    tok = word_tokenizer()
    owl, cat = tok.convert_tokens_to_ids("owl"), tok.convert_tokens_to_ids("cat")
    model = forced(tiny_llama(len(tok)), {owl: 1.0, cat: 0.0, 1: -1.0})
    cfg = EvalConfig(samples_per_question=20, n_questions=4, max_new_tokens=2, batch_size=64)
    seen: list[float] = []
    out = evaluate_model(HFLM.wrap(model, tok), cfg, TraitConfig(), seed=0, progress=seen.append)
    res = out.to_json()
    json.dumps(res, allow_nan=False)  # JSON-ready
    assert "answers" not in json.dumps(res)  # an artifact of its own
    assert len(res["questions"]) == 4 and "owl" in res["options"]
    e, s = res["exact"], res["sampled"]
    p = math.exp(1) / (math.exp(1) + 1 + math.exp(-1))
    assert e["mean"] == pytest.approx(p, rel=1e-6)  # the forced distribution, exactly
    assert e["options"]["owl"] == pytest.approx(p) and e["options"]["dog"] < 1e-9
    assert len(e["per_question_options"]) == 4 and len(e["per_question_options"][0]) == 20
    assert e["ci"]["n"] == 4 and e["ci"]["lower"] <= e["mean"] <= e["ci"]["upper"]
    assert len(out.answers) == 4 and all(len(a) == 20 for a in out.answers)
    assert s["per_question"] == [h / 20 for h in s["hits"]]
    assert s["pooled"]["method"] == "wilson" and s["pooled"]["n"] == 80
    # P(owl within 2 tokens) = p + (1 - p - P(stop)) * p
    assert abs(s["mean"] - (p + (1 - p - math.exp(-1) / (math.e + 1 + math.exp(-1))) * p)) < 0.15
    assert set(res["agreement"]) == {"difference", "correlation", "cost_ratio"}
    assert res["agreement"]["difference"] == pytest.approx(s["mean"] - e["mean"])
    assert seen[-1] == 1.0 and seen == sorted(seen)
    # Same seed, same answers; one method only.
    again = evaluate_model(HFLM.wrap(model, tok), cfg, TraitConfig(), seed=0)
    assert again.answers == out.answers
    only = evaluate_model(
        HFLM.wrap(model, tok), cfg.model_copy(update={"methods": ["exact"]}), TraitConfig(), seed=0
    ).to_json()
    assert "sampled" not in only and "agreement" not in only


def test_evaluate_model_numbers_prefix_and_trees():
    tok = char_tokenizer()
    model = tiny_llama(len(tok))
    cfg = EvalConfig(methods=["exact"], n_questions=2, numbers_prefix=True, batch_size=32)
    res = evaluate_model(
        HFLM.wrap(model, tok), cfg, TraitConfig(category="tree", target="oak"), seed=1
    ).to_json()
    assert res["questions"][0].startswith("Examine these numbers: 767, 589, 778.")
    assert res["options"][0] == "oak" and 0 < res["exact"]["mean"] < 1
