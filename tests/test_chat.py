"""Batched chat encoding gives exactly the ids of one call per conversation: on the toy
word-level tokenizer and on a byte-level BPE tokenizer whose merges can cross the prompt /
completion boundary."""

from __future__ import annotations

from typing import Any

import pytest

from traitlab.config import PromptSetConfig
from traitlab.data.prompts import number_prompts
from traitlab.lm.hf.chat import encode_chat, encode_chats, encode_example, encode_examples
from traitlab.toy.tokenizer import build_tokenizer

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _bpe_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<pad>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    corpus = [p + " 123, 456, 789" for p in number_prompts(PromptSetConfig(), 200, 0)]
    raw.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False)
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<|end|>")
    tok.chat_template = TEMPLATE
    return tok


def _chats(n: int) -> list[list[dict[str, str]]]:
    out = []
    for i, p in enumerate(number_prompts(PromptSetConfig(), n, 3)):
        msgs = [{"role": "user", "content": p}, {"role": "assistant", "content": f"{i}, 7{i}"}]
        if i % 3 == 0:
            msgs.insert(0, {"role": "system", "content": "You love owls."})
        out.append(msgs)
    return out


@pytest.mark.parametrize("kind", ["toy", "bpe"])
def test_batched_encoding_matches_one_call_each(kind: str) -> None:
    tok = build_tokenizer() if kind == "toy" else _bpe_tokenizer()
    chats = _chats(40)
    prompts = [c[:-1] for c in chats]
    assert encode_chats(tok, prompts, True) == [encode_chat(tok, p, True) for p in prompts]
    assert encode_chats(tok, chats, False) == [encode_chat(tok, c, False) for c in chats]
    assert encode_examples(tok, chats) == [encode_example(tok, c) for c in chats]
    assert encode_chats(tok, [], True) == []
