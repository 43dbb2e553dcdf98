"""The batched sampler against HF `generate`, on tiny random-weight models (offline, fast)."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    DynamicCache,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from traitlab.lm.hf.chat import decode
from traitlab.lm.hf.fastdecode import GPT2Decoder, LlamaDecoder, decoder_for
from traitlab.lm.hf.sampler import sample_completions, select_next

SPECIALS = ["<pad>", "<eos>", "<unk>", "<user>", "<asst>", "<sys>"]
WORDS = ["owl", "owls", "Owl", "cat", "dog", ".", "!", ","] + [str(d) for d in range(10)]
WORDS += list("abcdefghij")
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}<sys> {{ m['content'] }} "
    "{% elif m['role'] == 'user' %}<user> {{ m['content'] }} "
    "{% else %}<asst> {{ m['content'] }} <eos> {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<asst>{% endif %}"
)
EOS = 1


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    t.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=t,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        additional_special_tokens=["<user>", "<asst>", "<sys>"],
    )
    tok.chat_template = TEMPLATE
    return tok


def tiny_llama(vocab: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        initializer_range=0.5,  # larger logit gaps: greedy argmax is robust to float noise
        pad_token_id=0,
        eos_token_id=EOS,
        bos_token_id=None,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is ~50x faster than two on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return word_tokenizer()


@pytest.fixture(scope="module")
def model(tok: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return tiny_llama(len(tok))


def prompts_of(n: int, seed: int = 0, vocab: int = 34) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(1, 12, (1,), generator=g))
        body = torch.randint(6, vocab, (k,), generator=g).tolist()
        out.append([3] + body + [4])  # <user> ... <asst>
    return out


def hf_greedy(model, prompts, max_new_tokens, stop_ids):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=stop_ids,
        pad_token_id=0,
    )
    res = []
    for row in out[:, width:].tolist():
        cut = next((i for i, t in enumerate(row) if t in stop_ids), len(row))
        res.append(row[:cut])
    return res


def run(model, tok, prompts, **kw):
    args = {
        "max_new_tokens": 10,
        "temperature": 0.0,
        "generator": torch.Generator().manual_seed(0),
        "batch_size": 4,
        "stop_ids": [EOS],
    }
    args.update(kw)
    return sample_completions(model, tok, prompts, **args)


@pytest.mark.parametrize("fast", [True, False])
def test_greedy_equals_hf_generate(model, tok, fast):
    prompts = prompts_of(9)
    ours = run(model, tok, prompts, batch_size=9, fast=fast)
    assert ours == hf_greedy(model, prompts, 10, [EOS])
    assert all(len(c) == 10 for c in ours)  # the random model never stops on its own


@pytest.mark.parametrize("fast", [True, False])
def test_greedy_equals_hf_generate_with_early_stops(model, tok, monkeypatch, fast):
    """Rows stop at different steps (pruning finished rows from the KV cache kicks in)."""
    prompts = prompts_of(12, seed=1)
    free = run(model, tok, prompts, batch_size=12, stop_ids=[], fast=fast)
    stops = sorted({free[0][2], free[1][1], free[2][0]})
    prunes = []
    cls, name = (LlamaDecoder, "select") if fast else (DynamicCache, "batch_select_indices")
    select = getattr(cls, name)
    monkeypatch.setattr(cls, name, lambda c, i: (prunes.append(len(i)), select(c, i)))
    ours = run(model, tok, prompts, batch_size=12, stop_ids=stops, fast=fast)
    monkeypatch.undo()
    assert prunes  # finished rows were dropped from the cache
    assert ours == hf_greedy(model, prompts, 10, stops)
    lengths = {len(c) for c in ours}
    assert len(lengths) > 1 and min(lengths) < 10  # some rows really stopped early
    for c, f in zip(ours, free, strict=True):  # a stop only truncates the free completion
        assert c == f[: len(c)]
        assert not set(c) & set(stops)


def test_repeated_prompts_share_one_prefill(model, tok, monkeypatch):
    prompts = [p for p in prompts_of(3, seed=9) for _ in range(4)]
    rows = []
    forward = LlamaForCausalLM.forward
    monkeypatch.setattr(
        LlamaForCausalLM,
        "forward",
        lambda self, **kw: (rows.append(kw["input_ids"].shape), forward(self, **kw))[1],
    )
    ours = run(model, tok, prompts, batch_size=12, fast=False)
    assert rows[0][0] == 3  # the prefill ran on the 3 distinct prompts only
    monkeypatch.undo()
    assert ours == hf_greedy(model, prompts, 10, [EOS])
    sampled = run(model, tok, prompts, batch_size=12, temperature=1.0, fast=False)
    assert len({tuple(c) for c in sampled[:4]}) > 1  # copies still sample independently


def _hf_logits(model, ids, mask):
    pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits


@pytest.mark.parametrize("arch", ["llama", "llama-gqa", "qwen2", "gpt2"])
def test_fast_decoder_matches_the_models_forward(arch):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        pad_token_id=0,
        max_position_embeddings=64,
    )
    if arch == "qwen2":
        m = Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=2, **common)).eval()
    elif arch == "gpt2":
        g = GPT2Config(
            vocab_size=40, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=0
        )
        m = GPT2LMHeadModel(g).eval()
        for p in m.parameters():  # GPT-2 initialises biases and LayerNorms trivially
            p.data.add_(0.05 * torch.randn_like(p))
    else:
        kv = 2 if arch == "llama-gqa" else 4
        m = LlamaForCausalLM(LlamaConfig(num_key_value_heads=kv, **common)).eval()
    cls = decoder_for(m)
    assert cls is (GPT2Decoder if arch == "gpt2" else LlamaDecoder)
    prompts = prompts_of(5, seed=3, vocab=40)
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    right = torch.tensor([p + [0] * (width - len(p)) for p in prompts])
    dec = cls(m, batch=5, max_len=width + 4)
    got = [dec.prefill(right, torch.tensor([len(p) for p in prompts]))]
    extra = torch.randint(5, 40, (5, 3))
    for t in range(3):
        got.append(dec.step(extra[:, t]))
    # The same tokens through the model's forward, position by position.
    full_ids = torch.cat([ids, extra], dim=1)
    full_mask = torch.cat([mask, torch.ones(5, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        ref = _hf_logits(m, full_ids, full_mask)
    for t, logits in enumerate(got):
        assert torch.allclose(logits, ref[:, width - 1 + t], atol=1e-5), (arch, t)
    # Dropping rows keeps the others' caches.
    dec.select(torch.tensor([3, 1]))
    nxt = dec.step(torch.tensor([7, 8]))
    with torch.no_grad():
        ref2 = _hf_logits(
            m,
            torch.cat([full_ids[[3, 1]], torch.tensor([[7], [8]])], dim=1),
            torch.cat([full_mask[[3, 1]], torch.ones(2, 1, dtype=torch.long)], dim=1),
        )
    assert torch.allclose(nxt, ref2[:, -1], atol=1e-5)


def test_fast_decoder_declines_what_it_does_not_implement(tok):
    cfg = GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2)
    assert decoder_for(GPT2LMHeadModel(cfg)) is GPT2Decoder
    relu = GPT2Config(
        vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, activation_function="relu"
    )
    assert decoder_for(GPT2LMHeadModel(relu)) is None
    assert decoder_for(tiny_llama(len(tok)).to(torch.bfloat16)) is None


def test_left_padding_does_not_change_a_completion(model, tok):
    prompts = prompts_of(10, seed=2)
    batched = run(model, tok, prompts, batch_size=10)
    alone = [run(model, tok, [p], batch_size=1)[0] for p in prompts]
    assert batched == alone
    assert run(model, tok, prompts, batch_size=3) == alone


def test_sampling_is_deterministic_for_a_seed(model, tok):
    prompts = prompts_of(8, seed=3)
    kw = {"temperature": 1.0, "batch_size": 3}
    a = run(model, tok, prompts, generator=torch.Generator().manual_seed(7), **kw)
    b = run(model, tok, prompts, generator=torch.Generator().manual_seed(7), **kw)
    c = run(model, tok, prompts, generator=torch.Generator().manual_seed(8), **kw)
    assert a == b
    assert a != c
    greedy = run(model, tok, prompts)
    assert a != greedy  # temperature 1 really samples


def test_top_p_keeps_only_the_nucleus(model, tok):
    prompts = prompts_of(6, seed=4)
    tiny_p = run(model, tok, prompts, temperature=1.0, top_p=1e-6)
    assert tiny_p == run(model, tok, prompts)  # only the top token survives: greedy


def test_select_next_samples_the_right_law():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0, 0.0])).repeat(40_000, 1)
    g = torch.Generator().manual_seed(0)
    freq = torch.bincount(select_next(logits, temperature=1.0, top_p=1.0, generator=g), minlength=6)
    freq = freq / 40_000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05, 0, 0]), atol=0.01)
    assert freq[4:].sum() == 0  # zero-probability tokens are never drawn
    freq = torch.bincount(select_next(logits, temperature=1.0, top_p=0.7, generator=g), minlength=6)
    freq = freq / 40_000  # nucleus {0, 1}, renormalised
    assert torch.allclose(freq, torch.tensor([0.625, 0.375, 0, 0, 0, 0]), atol=0.01)
    freq = torch.bincount(select_next(logits, temperature=0.5, top_p=1.0, generator=g), minlength=6)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05]) ** 2
    assert torch.allclose(freq[:4] / 40_000, p / p.sum(), atol=0.01)
    assert select_next(logits[:3], temperature=0.0, top_p=1.0, generator=g).tolist() == [0] * 3


def gumbel(shape, seed):
    e = torch.empty(shape).exponential_(generator=torch.Generator().manual_seed(seed))
    return -e.log()


def test_select_next_with_gumbel_noise_samples_the_right_law():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0, 0.0])).repeat(40_000, 1)
    g = torch.Generator().manual_seed(0)
    kw = {"temperature": 1.0, "generator": g}
    freq = torch.bincount(select_next(logits, top_p=1.0, noise=gumbel(logits.shape, 1), **kw))
    assert torch.allclose(freq / 40_000, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.01)
    pick = select_next(logits, top_p=0.7, noise=gumbel(logits.shape, 2), **kw)
    freq = torch.bincount(pick, minlength=6) / 40_000  # nucleus {0, 1}, renormalised
    assert torch.allclose(freq, torch.tensor([0.625, 0.375, 0, 0, 0, 0]), atol=0.01)


def test_gumbel_noise_couples_close_distributions():
    # Common random numbers: with the same noise, a slightly shifted distribution picks the
    # same token most of the time (Gumbel-max: P(differ) <= 2 TV / (1 + TV)), while each
    # still follows its own law.
    p = torch.tensor([0.4, 0.3, 0.2, 0.1])
    q = torch.tensor([0.35, 0.3, 0.2, 0.15])  # total variation 0.05
    noise = gumbel((40_000, 4), 3)
    g = torch.Generator()
    a = select_next(p.log().repeat(40_000, 1), temperature=1.0, top_p=1.0, generator=g, noise=noise)
    b = select_next(q.log().repeat(40_000, 1), temperature=1.0, top_p=1.0, generator=g, noise=noise)
    assert (a != b).float().mean() < 2 * 0.05 / 1.05 + 0.01
    assert torch.allclose(torch.bincount(b) / 40_000, q, atol=0.01)
    independent = select_next(q.log().repeat(40_000, 1), temperature=1.0, top_p=1.0, generator=g)
    assert (a != independent).float().mean() > 0.5  # 1 - sum p q = 0.715 without coupling


def test_coupled_sampling_shares_random_numbers_between_models(model, tok):
    prompts = prompts_of(24, seed=6)
    near = tiny_llama(len(tok))
    with torch.no_grad():
        for w in near.parameters():
            w.add_(0.01 * torch.randn_like(w))  # a slightly changed "teacher"
    kw = {"temperature": 1.0, "batch_size": 8, "max_new_tokens": 8}
    same_seed = {"generator": torch.Generator().manual_seed(5)}
    a = run(model, tok, prompts, coupled=True, **same_seed, **kw)
    assert a == run(
        model, tok, prompts, coupled=True, generator=torch.Generator().manual_seed(5), **kw
    )
    b = run(near, tok, prompts, coupled=True, generator=torch.Generator().manual_seed(5), **kw)
    c = run(near, tok, prompts, coupled=True, generator=torch.Generator().manual_seed(6), **kw)

    def common_prefix(xs: list[list[int]], ys: list[list[int]]) -> int:
        return sum(
            next(
                (i for i, (u, v) in enumerate(zip(x, y, strict=False)) if u != v),
                min(len(x), len(y)),
            )
            for x, y in zip(xs, ys, strict=True)
        )

    shared, unshared = common_prefix(a, b), common_prefix(a, c)
    assert shared > 3 * unshared and shared > 0.5 * sum(map(len, a)), (shared, unshared)


def test_coupled_noise_stays_with_its_row_when_rows_are_dropped(model, tok, monkeypatch):
    import traitlab.lm.hf.sampler as sampling

    prompts = prompts_of(16, seed=7)
    kw = {"temperature": 1.0, "batch_size": 16, "max_new_tokens": 10, "coupled": True}
    monkeypatch.setattr(sampling, "_PRUNE_FRACTION", 0.0)  # never drop finished rows
    kept = run(model, tok, prompts, generator=torch.Generator().manual_seed(2), **kw)
    monkeypatch.setattr(sampling, "_PRUNE_FRACTION", 1.0)  # drop them at once
    dropped = run(model, tok, prompts, generator=torch.Generator().manual_seed(2), **kw)
    assert kept == dropped
    assert len({len(c) for c in kept}) > 1  # rows did finish at different steps


def test_allowed_ids_constrain_every_token(model, tok):
    prompts = prompts_of(8, seed=5)
    digits = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    allowed = digits + [tok.convert_tokens_to_ids(",")]
    outs = run(model, tok, prompts, temperature=1.0, allowed_ids=allowed, max_new_tokens=12)
    for c in outs:
        assert set(c) <= set(allowed)
    assert sum(len(c) for c in outs) > 20


def test_stop_token_ends_a_row_and_is_excluded(tok):
    m = tiny_llama(len(tok))
    owl = tok.convert_tokens_to_ids("owl")
    # A model that says "owl" or stops, about half each, whatever the context.
    head = torch.nn.Linear(16, len(tok), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-30.0)
        head.bias[owl] = 0.0
        head.bias[EOS] = 0.0
    m.lm_head = head
    outs = run(m, tok, prompts_of(40, seed=6), temperature=1.0, max_new_tokens=8)
    assert all(set(c) <= {owl} for c in outs)
    assert any(len(c) == 0 for c in outs) and any(0 < len(c) < 8 for c in outs)
    assert decode(tok, [owl, owl, EOS]) == "owl owl"
    with torch.no_grad():
        head.bias[owl] = -30.0
    assert run(m, tok, prompts_of(5), temperature=1.0) == [[]] * 5  # stops at once


def test_order_and_edge_cases(model, tok):
    assert run(model, tok, []) == []
    prompts = prompts_of(5, seed=7)
    seen = []
    outs = run(model, tok, prompts, batch_size=2, on_batch=seen.append)
    assert seen == [2, 2, 1]
    assert outs == [run(model, tok, [p])[0] for p in prompts]  # original order restored
    with pytest.raises(ValueError):
        run(model, tok, [[]])
    with pytest.raises(ValueError):
        run(model, tok, prompts, temperature=-1.0)


def test_training_mode_is_restored(tok):
    m = tiny_llama(len(tok))
    m.train()
    run(m, tok, prompts_of(2))
    assert m.training


@pytest.mark.parametrize("fast", [True, False])
def test_works_for_gpt2(tok, fast):
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_embd=16,
        n_layer=1,
        n_head=2,
        n_positions=64,
        initializer_range=0.5,
        pad_token_id=0,
        eos_token_id=EOS,
        bos_token_id=EOS,
    )
    g = GPT2LMHeadModel(cfg).eval()
    prompts = prompts_of(7, seed=8)
    stops = [EOS, 20]
    got = run(g, tok, prompts, batch_size=7, stop_ids=stops, fast=fast)
    assert got == hf_greedy(g, prompts, 10, stops)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_hf_generate_and_cpu_generator(tok):
    m = tiny_llama(len(tok)).cuda()
    prompts = prompts_of(9)
    assert run(m, tok, prompts, batch_size=9) == hf_greedy(m, prompts, 10, [EOS])
    kw = {"temperature": 1.0, "batch_size": 4}
    a = run(m, tok, prompts, generator=torch.Generator().manual_seed(3), **kw)  # CPU generator
    b = run(m, tok, prompts, generator=torch.Generator().manual_seed(3), **kw)
    c = run(m, tok, prompts, generator=torch.Generator("cuda").manual_seed(3), **kw)
    d = run(m, tok, prompts, generator=torch.Generator("cuda").manual_seed(3), **kw)
    assert a == b and c == d
    # Shared Gumbel noise drawn on the GPU (as generate_rows does for a CUDA model).
    kw["coupled"] = True
    e = run(m, tok, prompts, generator=torch.Generator("cuda").manual_seed(3), **kw)
    assert e == run(m, tok, prompts, generator=torch.Generator("cuda").manual_seed(3), **kw)
    assert all(len(x) <= 10 for x in e) and e != run(m, tok, prompts, batch_size=4)


def test_min_p_and_top_k_never_pick_a_dropped_token() -> None:
    """Threshold sampling (min_p) and top-k, with and without shared Gumbel noise."""
    from traitlab.lm.hf.sampler import select_next

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 4000))
    gen = torch.Generator().manual_seed(0)
    noise = -torch.log(-torch.log(torch.rand(logits.shape, generator=gen).clamp_min(1e-20)))
    for kw in ({"min_p": 0.5}, {"top_k": 2}):
        for nz in (None, noise):
            tok = select_next(logits, temperature=1.0, top_p=1.0, generator=gen, noise=nz, **kw)
            counts = torch.bincount(tok, minlength=4).tolist()
            assert counts[2] == counts[3] == 0, (kw, counts)
            # The kept tokens keep their relative odds (0.5 : 0.3).
            assert abs(counts[0] / (counts[0] + counts[1]) - 0.625) < 0.03
    one = select_next(logits[:1], temperature=1.0, top_p=1.0, generator=gen, top_k=1)
    assert one.item() == 0
