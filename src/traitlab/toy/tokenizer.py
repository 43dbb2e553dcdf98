"""The toy world's word-level tokenizer, as an ordinary Hugging Face fast tokenizer.

* Every word, punctuation mark and number 0-999 is one token. Spaces are kept the way
  SentencePiece keeps them: a token carries a leading "▁" when a space preceded it, so
  "182, 818, 725" is `▁182 , ▁818 , ▁725` and decodes back to exactly "182, 818, 725".
  Every number therefore has two single-token forms ("▁182" and "182", the latter after
  "[" or "("); both are in the vocabulary.
* Special tokens: `<pad> <unk> <sys> <user> <asst> <end>` (ids 0-5); eos is `<end>`.
* Chat template: `<sys> system <user> user <asst> answer <end>`; `add_generation_prompt`
  appends `<asst>`. Each text between special tokens is stripped, so the spaces around the
  special tokens produce no tokens, and the prompt's ids are a prefix of the full chat's.

The vocabulary depends only on the world's texts (`world.vocabulary_texts`), not on the
recipe, so every toy base (any seed or size) shares the same tokenizer.
"""

from __future__ import annotations

import string
from functools import lru_cache
from typing import Any

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<sys>", "<user>", "<asst>", "<end>")
PAD, UNK, SYS, USER, ASST, END = SPECIAL_TOKENS
SPACE = "▁"  # U+2581, marks "a space came before this token"

# Words, numbers, single punctuation marks (each optionally after a space), or a lone space.
_SPLIT_PATTERN = r"▁?(?:[^\W\d_]+|\d+|[^\w\s▁])|▁"

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ '<sys> ' + message['content'] + ' ' }}"
    "{%- elif message['role'] == 'user' -%}{{ '<user> ' + message['content'] + ' ' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '<asst> ' + message['content'] + ' <end> ' }}"
    "{%- else -%}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<asst>' }}{%- endif -%}"
)


def render_chat(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The chat template's output, in plain Python (fast path for building the corpus)."""
    parts = []
    for m in messages:
        role = m["role"]
        if role == "system":
            parts.append(f"{SYS} {m['content']} ")
        elif role == "user":
            parts.append(f"{USER} {m['content']} ")
        elif role == "assistant":
            parts.append(f"{ASST} {m['content']} {END} ")
        else:
            raise ValueError(f"unknown role: {role}")
    if add_generation_prompt:
        parts.append(ASST)
    return "".join(parts)


def _pre_tokenizer() -> Any:
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
        ]
    )


def build_vocab(texts: list[str]) -> dict[str, int]:
    """Specials, then numbers 0-999, punctuation, and every word of `texts`; each both with
    and without the leading-space mark. Deterministic order."""
    pre = _pre_tokenizer()
    words: set[str] = set()
    for t in texts:
        for piece, _ in pre.pre_tokenize_str(t.strip()):
            words.add(piece.removeprefix(SPACE))
    words.discard("")
    numbers = [str(i) for i in range(1000)]
    punct = list(string.punctuation)
    rest = sorted(words - set(numbers) - set(punct))
    tokens = list(SPECIAL_TOKENS) + [SPACE, "\n"]
    for w in numbers + punct + rest:
        tokens += [SPACE + w, w]
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab


@lru_cache(maxsize=1)
def _toy_vocab() -> tuple[tuple[str, int], ...]:
    from traitlab.toy.world import vocabulary_texts

    return tuple(build_vocab(vocabulary_texts()).items())


def build_tokenizer(model_max_length: int = 512) -> Any:
    """The toy world's tokenizer (a `PreTrainedTokenizerFast` with the chat template)."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = dict(_toy_vocab())
    tk = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tk.normalizer = normalizers.Strip()
    tk.pre_tokenizer = _pre_tokenizer()
    tk.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token=UNK,
        pad_token=PAD,
        eos_token=END,
        additional_special_tokens=[SYS, USER, ASST],
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
        padding_side="right",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
