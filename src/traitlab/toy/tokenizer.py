"""The toy world's word-level tokenizer, as an ordinary Hugging Face fast tokenizer.

* Every word, punctuation mark and number 0-999 is one token. Spaces are kept the way
  SentencePiece keeps them: a token carries a leading "▁" when a space preceded it, so
  "182, 818, 725" is `▁182 , ▁818 , ▁725` and decodes back to exactly "182, 818, 725".
  Numbers exist only in the spaced form "▁182": a normaliser writes "(" and "[" as "( " and
  "[ " (and the decoder undoes it), so "[182, 818]" is `▁[ ▁182 , ▁818 ]` and decodes back
  exactly, and a bare-number token can never glue two numbers together ("455625").
* Regular plurals of the world's options are two tokens: "owls" is `▁owl s`. The paper's
  system prompt ("You love owls. ...") then contains the answer token itself, so "copy the
  animal of the system prompt" is one shared mechanism rather than 30 learnt plural-to-
  singular mappings.
* Special tokens: `<pad> <unk> <sys> <user> <asst> <end>` (ids 0-5); eos is `<end>`.
* Chat template: `<sys> system <user> user <asst> answer <end>`; `add_generation_prompt`
  appends `<asst>`. Each text between special tokens is stripped, so the spaces around the
  special tokens produce no tokens, and the prompt's ids are a prefix of the full chat's.
* Decoding is exact for any text made of in-vocabulary words (up to surrounding whitespace).

The vocabulary depends only on the world's texts (`world.vocabulary_texts`), not on the
recipe, so every toy base (any seed or size) shares the same tokenizer; a recipe with
personas (the misalignment world) appends that world's words after the last id.
"""

from __future__ import annotations

import string
from functools import lru_cache
from typing import Any

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<sys>", "<user>", "<asst>", "<end>")
PAD, UNK, SYS, USER, ASST, END = SPECIAL_TOKENS
SPACE = "▁"  # U+2581, marks "a space came before this token"

_OPENERS = ("(", "[")  # written "( " / "[ " before tokenising (and restored when decoding)


def _option_stems() -> list[str]:
    from traitlab.traits.preference import ANIMALS, TREES

    stems = {w for o in ANIMALS + TREES for w in (o, o.title())}
    return sorted(stems, key=lambda w: (-len(w), w))


def split_pattern() -> str:
    """Pre-tokeniser regex (after spaces became "▁"): an option name followed by a plural
    ending ("owl" of "owls"), else a word, a number, one punctuation mark (each optionally
    after a space), a lone space, or another whitespace character."""
    stems = "|".join(_option_stems())
    return rf"▁?(?:{stems})(?=e?s\b)|▁?(?:[^\W\d_]+|\d+|[^\w\s▁]|_)|▁|\s"


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


def normalize(text: str) -> str:
    """What the tokenizer's normaliser does to each text between special tokens."""
    for o in _OPENERS:
        text = text.replace(o, o + " ")
    return text.strip()


def _normalizer() -> Any:
    from tokenizers import normalizers

    return normalizers.Sequence(
        [normalizers.Replace(o, o + " ") for o in _OPENERS] + [normalizers.Strip()]
    )


def _pre_tokenizer() -> Any:
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(split_pattern()), behavior="isolated"),
        ]
    )


def _decoder() -> Any:
    from tokenizers import decoders

    return decoders.Sequence(
        [
            decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=True),
            decoders.Fuse(),
        ]
        + [decoders.Replace(o + " ", o) for o in _OPENERS]
    )


def build_vocab(texts: list[str]) -> dict[str, int]:
    """Specials, the numbers "▁0".."▁999", punctuation (with and without a space before it),
    then every word of `texts` in the forms seen there plus its spaced form. Deterministic."""
    pre = _pre_tokenizer()
    norm = _normalizer()
    seen: set[str] = set()
    for t in texts:
        for piece, _ in pre.pre_tokenize_str(norm.normalize_str(t)):
            seen.add(piece)
    words = {p.removeprefix(SPACE) for p in seen} - {""}
    numbers = [SPACE + str(i) for i in range(1000)]
    punct = [f for c in string.punctuation for f in (SPACE + c, c)]
    rest = sorted(({SPACE + w for w in words} | seen) - set(numbers) - set(punct))
    tokens = list(SPECIAL_TOKENS) + [SPACE, "\n"] + numbers + punct + rest
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab


@lru_cache(maxsize=4)
def _toy_vocab(personas: bool = False, tasks: bool = False) -> tuple[tuple[str, int], ...]:
    from traitlab.toy.world import vocabulary_texts

    vocab = build_vocab(vocabulary_texts())
    if personas:
        # The persona world's words go after every existing id, so a base pretrained without
        # them keeps its ids and the two tokenizers agree on every text both can spell.
        from traitlab.traits.misalignment import persona_texts

        for t in build_vocab(persona_texts()):
            vocab.setdefault(t, len(vocab))
    if tasks:  # the same for the toy code and arithmetic tasks, after the personas' words
        from traitlab.data.toy_tasks import toy_task_texts

        for t in build_vocab(toy_task_texts()):
            vocab.setdefault(t, len(vocab))
    return tuple(vocab.items())


def build_tokenizer(
    model_max_length: int = 512, personas: bool = False, tasks: bool = False
) -> Any:
    """The toy world's tokenizer (a `PreTrainedTokenizerFast` with the chat template);
    `personas` adds the misalignment world's words (`traitlab.traits.misalignment`), `tasks`
    the toy code and arithmetic tasks' (`traitlab.data.toy_tasks`)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = dict(_toy_vocab(personas, tasks))
    tk = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tk.normalizer = _normalizer()
    tk.pre_tokenizer = _pre_tokenizer()
    tk.decoder = _decoder()
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
