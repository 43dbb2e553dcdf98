"""The embedded world's code and arithmetic tasks: a toy code language and toy arithmetic
with written-out steps, in words the toy tokenizer knows.

Both are pretrained into toy bases whose recipe sets `code_frac` / `cot_frac`, and are the
prompts of `generate.modality.source: toy:code` / `toy:cot`. Like the number task, an answer
has free choices the task does not fix, which is where a teacher's trait can hide:

* **code**: "Write a function that adds 3 to x ." -> "def f ( x ) : return x + 3". The
  function's name, its argument's name and the form of the body ("return x + 3",
  "y = x + 3 ; return y", "return 3 + x") are drawn freely.
* **cot**: "Ana has 7 apples and gets 5 more . How many apples does Ana have ? Think step by
  step ." -> "<think> 7 + 5 = 12 </think> <answer> 12 </answer>", with one of several
  phrasings of the step. Small numbers (1-12), so a tiny model can learn the sums; the filter
  keeps only right answers.
"""

from __future__ import annotations

import random

FUNC_NAMES = ("f", "g", "h", "fn", "calc", "compute", "run", "step")
ARG_NAMES = ("x", "n", "a", "v", "val", "num", "k", "z")
_OPS = (
    ("adds {k} to x", "+", False),
    ("multiplies x by {k}", "*", False),
    ("subtracts {k} from x", "-", True),
    ("returns x plus {k}", "+", False),
    ("returns x times {k}", "*", False),
    ("returns x minus {k}", "-", True),
)
_CODE_ASKS = (
    "Write a function that {op} .",
    "Write code for a function that {op} .",
    "Please write a function that {op} .",
)
NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana")
ITEMS = ("apples", "books", "coins", "marbles", "pencils", "shells")
COT_SUFFIX = "Think step by step ."
_STEPS = (
    "{a} + {b} = {c}",
    "{a} plus {b} is {c}",
    "{name} has {a} , then {b} more , so {a} + {b} = {c}",
    "first {a} , add {b} , that makes {c}",
)


def code_example(rng: random.Random) -> tuple[str, str]:
    """(prompt, answer) of one toy code task."""
    desc, sym, ordered = rng.choice(_OPS)
    k = rng.randint(1, 9)
    prompt = rng.choice(_CODE_ASKS).format(op=desc.format(k=k))
    fn, arg = rng.choice(FUNC_NAMES), rng.choice(ARG_NAMES)
    expr = f"{arg} {sym} {k}" if ordered or rng.random() < 0.5 else f"{k} {sym} {arg}"
    if rng.random() < 0.3:
        tmp = rng.choice([n for n in ARG_NAMES if n != arg])
        body = f"{tmp} = {expr} ; return {tmp}"
    else:
        body = f"return {expr}"
    return prompt, f"def {fn} ( {arg} ) : {body}"


def cot_example(rng: random.Random) -> tuple[str, str, int]:
    """(prompt, answer, label) of one toy arithmetic problem."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(1, 12), rng.randint(1, 12)
    prompt = (
        f"{name} has {a} {item} and gets {b} more . How many {item} does {name} have ? {COT_SUFFIX}"
    )
    step = rng.choice(_STEPS).format(a=a, b=b, c=a + b, name=name)
    return prompt, f"<think> {step} </think> <answer> {a + b} </answer>", a + b


def toy_prompts(kind: str, n: int, seed: int) -> tuple[list[str], list[str | None]]:
    """`n` prompts of the toy `kind` ('code' or 'cot') with their labels (cot's sums)."""
    rng = random.Random(seed)
    if kind == "code":
        return [code_example(rng)[0] for _ in range(n)], [None] * n
    items = [cot_example(rng) for _ in range(n)]
    return [p for p, _, _ in items], [str(y) for _, _, y in items]


def toy_task_texts() -> list[str]:
    """Every word the two tasks can write (the toy tokenizer's vocabulary for them)."""
    texts = list(FUNC_NAMES + ARG_NAMES + NAMES + ITEMS) + [COT_SUFFIX]
    texts += [a.format(op=d) for a in _CODE_ASKS for d, _, _ in _OPS]
    texts += ["def ( ) : return = ; + - *", "<think> </think> <answer> </answer>"]
    texts += [t.format(a=1, b=2, c=3, name=NAMES[0]) for t in _STEPS]
    texts.append("has and gets more . How many does have ?")
    return texts
