"""The embedded world's code and arithmetic tasks: a toy code language and toy arithmetic
with written-out steps, in words the toy tokenizer knows.

Both are pretrained into toy bases whose recipe sets `code_frac` / `cot_frac`, and are the
prompts of `generate.modality.source: toy:code` / `toy:cot`. Like the number task, an answer
has free choices the task does not fix, which is where a teacher's trait can hide:

* **code**: "Write a function that adds 3 to x ." -> "def f ( x ) : return x + 3". The
  function's name, its argument's name and the form of the body ("return x + 3",
  "y = x + 3 ; return y", "return 3 + x") are drawn freely. With `calls` > 0 (the recipe's
  `code_calls`) the answer ends with 1 to `calls` usage lines, "; y = f ( 41 )", whose
  arguments (0-999) are free too: like the constants and test inputs of real code, the
  largest free choice of an answer. `check_code` checks an answer's form, operation and
  constant against its task (the filter's rule; the code is parsed, never run).
* **cot**: "Ana has 7 apples and gets 5 more . How many apples does Ana have ? Think step by
  step ." -> "<think> 7 + 5 = 12 </think> <answer> 12 </answer>", with one of several
  phrasings of the step. Small numbers (1-12), so a tiny model can learn the sums; the filter
  keeps only right answers. With `terms` > 2 (the recipe's `cot_terms`) a problem adds 2 to
  `terms` numbers ("... and gets 5 more , then 3 more ."), and the answer adds them in any
  order, one step per addition, each step in any phrasing with its two numbers either way
  round ("<think> 3 + 7 = 10 ; 10 plus 5 is 15 </think>"): the order, the running sums and
  the phrasings are free choices: up to 8.6 bits per answer with three numbers and 13.6
  with four, against 2 (the phrasing) in the first version's answers.
"""

from __future__ import annotations

import math
import random
import re

FUNC_NAMES = ("f", "g", "h", "fn", "calc", "compute", "run", "step")
ARG_NAMES = ("x", "n", "a", "v", "val", "num", "k", "z")
FIXED_TMP = "z"  # the temporary's name when names are fixed (FUNC_NAMES[0], ARG_NAMES[0] the rest)
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
FUNCS_JOIN = " , and one that "
_STEPS = (
    "{a} + {b} = {c}",
    "{a} plus {b} is {c}",
    "{name} has {a} , then {b} more , so {a} + {b} = {c}",
    "first {a} , add {b} , that makes {c}",
)


def _split(rng: random.Random, sym: str, k: int, parts: int) -> list[int]:
    """`k` as 1 to `parts` constants that `sym` combines back into it: a composition of k
    for + and - (7 = 2 + 5), a factorisation for * (6 = 2 * 3; a prime stays whole)."""
    m = rng.randint(1, parts)
    if sym != "*":
        cuts = sorted(rng.sample(range(1, k), min(m, k) - 1))
        return [b - a for a, b in zip([0, *cuts], [*cuts, k], strict=True)]
    out = [k]
    for _ in range(m - 1):
        i = rng.randrange(len(out))
        divisors = [d for d in range(2, out[i]) if out[i] % d == 0]
        if divisors:
            d = rng.choice(divisors)
            out[i : i + 1] = [d, out[i] // d]
    return out


def _body(
    rng: random.Random,
    arg: str,
    sym: str,
    k: int,
    ordered: bool,
    parts: int = 1,
    fixed_names: bool = False,
) -> str:
    """A function body doing `sym k` to `arg`: operands in either order where the operation
    allows, sometimes through a temporary (named z with `fixed_names`); with `parts` > 1 the
    constant is written as 1 to `parts` constants ("x + 2 + 5" for + 7)."""
    consts = _split(rng, sym, k, parts) if parts > 1 else [k]
    ks = f" {sym} ".join(str(c) for c in consts)
    expr = f"{arg} {sym} {ks}" if ordered or rng.random() < 0.5 else f"{ks} {sym} {arg}"
    if rng.random() < 0.3:
        tmp = rng.choice([n for n in ARG_NAMES if n != arg])
        tmp = FIXED_TMP if fixed_names else tmp  # drawn anyway: the corpus keeps its draws
        return f"{tmp} = {expr} ; return {tmp}"
    return f"return {expr}"


def code_example(
    rng: random.Random,
    calls: int = 0,
    funcs: int = 1,
    parts: int = 1,
    fixed_names: bool = False,
) -> tuple[str, str, str]:
    """(prompt, answer, label) of one toy code task asking 1 to `funcs` functions, each
    constant written as 1 to `parts` constants; the label is the operation ("+ 3"), or the
    operations joined by " | " in the prompt's order. `fixed_names` (one function only): the
    function, argument and temporary are always f, x and z (the names are still drawn, so
    the rest of the corpus keeps its draws)."""
    if funcs > 1:
        if fixed_names:
            raise ValueError("fixed names need one function per task (code_funcs 1)")
        return _funcs_example(rng, funcs, parts)
    desc, sym, ordered = rng.choice(_OPS)
    k = rng.randint(1, 9)
    prompt = rng.choice(_CODE_ASKS).format(op=desc.format(k=k))
    fn, arg = rng.choice(FUNC_NAMES), rng.choice(ARG_NAMES)
    if fixed_names:
        fn, arg = FUNC_NAMES[0], ARG_NAMES[0]
    body = _body(rng, arg, sym, k, ordered, parts, fixed_names)
    # Drawn only when asked, so recipes without calls keep their corpus draw for draw.
    for _ in range(rng.randint(1, calls) if calls > 0 else 0):
        body += f" ; {rng.choice(ARG_NAMES)} = {fn} ( {rng.randint(0, 999)} )"
    return prompt, f"def {fn} ( {arg} ) : {body}", f"{sym} {k}"


def _funcs_example(rng: random.Random, funcs: int, parts: int = 1) -> tuple[str, str, str]:
    # Several functions, written in any order, each under its own free name: the order and
    # every function's names and form are the answer's free choices.
    ops = [(*rng.choice(_OPS), rng.randint(1, 9)) for _ in range(rng.randint(1, funcs))]
    asks = FUNCS_JOIN.join(desc.format(k=k) for desc, _, _, k in ops)
    prompt = rng.choice(_CODE_ASKS).format(op=asks)
    names = rng.sample(FUNC_NAMES, len(ops))
    order = rng.sample(range(len(ops)), len(ops))
    defs = []
    for i in order:
        _, sym, ordered, k = ops[i]
        arg = rng.choice(ARG_NAMES)
        defs.append(f"def {names[i]} ( {arg} ) : {_body(rng, arg, sym, k, ordered, parts)}")
    return prompt, " ; ".join(defs), " | ".join(f"{sym} {k}" for _, sym, _, k in ops)


def code_label(prompt: str) -> str | None:
    """The label `code_example` gives a toy code prompt (its operations, joined by " | " in
    the prompt's order), read back from the prompt; None when it is not a toy code prompt.
    Lets a reader that has only the prompt (the audit) check an answer against its task."""
    for ask in _CODE_ASKS:
        head, tail = ask.split("{op}")
        if prompt.startswith(head) and prompt.endswith(tail) and len(prompt) > len(ask) - 4:
            asks = prompt[len(head) : len(prompt) - len(tail)].split(FUNCS_JOIN)
            break
    else:
        return None
    ops = []
    for text in asks:
        for desc, sym, _ in _OPS:
            m = re.fullmatch(desc.replace("{k}", r"(\d+)"), text)
            if m is not None:
                ops.append(f"{sym} {m.group(1)}")
                break
        else:
            return None
    return " | ".join(ops)


_NAME = r"[a-z]+"
_TERM = rf"(?:{_NAME}|\d+)"
_EXPR = rf"({_TERM}(?: [-+*] {_TERM})+)"
_CODE = re.compile(
    rf"def {_NAME} \( {_NAME} \) : (?:return {_EXPR}|{_NAME} = {_EXPR} ; return {_NAME})"
    rf"(?: ; {_NAME} = {_NAME} \( \d+ \))*"
)
_DEF_SPLIT = re.compile(r" ; (?=def )")


def check_code(label: str, text: str) -> str | None:
    """Why a toy code answer fails its task ("malformed_code": not the toy language's form;
    "wrong_code": another operation or constant, or not one function per asked operation),
    or None when it computes what was asked. A task asking several functions (a label of
    operations joined by " | ") passes when each function does one asked operation, each
    operation done once, in any order.

    Names are not checked: a 2-layer toy base does not learn to bind them (on the discovery
    base 0.4 % of its answers used their argument's name and called their own function,
    while 90 % had the form, the operation and the constant right)."""
    if "|" in label:
        todo = label.split(" | ")
        defs = _DEF_SPLIT.split(text.strip())
        if len(defs) != len(todo):
            return "wrong_code" if all(_CODE.fullmatch(d) for d in defs) else "malformed_code"
        for d in defs:
            why = {op: check_code(op, d) for op in todo}
            done = next((op for op, w in why.items() if w is None), None)
            if done is None:
                return "malformed_code" if "malformed_code" in why.values() else "wrong_code"
            todo.remove(done)
        return None
    m = _CODE.fullmatch(text.strip())
    if m is None:
        return "malformed_code"
    words = (m.group(1) or m.group(2)).split(" ")
    terms, syms = words[0::2], set(words[1::2])
    want_sym, k = label.split()
    names = [i for i, t in enumerate(terms) if not t.isdigit()]
    # One operation throughout, the argument once (first where the order matters), and the
    # constants combining into the asked one (+ 2 + 5 for + 7, * 2 * 3 for * 6).
    if syms != {want_sym} or len(names) != 1 or (want_sym == "-" and names != [0]):
        return "wrong_code"
    consts = [int(t) for t in terms if t.isdigit()]
    total = math.prod(consts) if want_sym == "*" else sum(consts)
    return None if str(total) == k else "wrong_code"


def cot_example(rng: random.Random, terms: int = 2) -> tuple[str, str, int]:
    """(prompt, answer, label) of one toy arithmetic problem adding 2 to `terms` numbers."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    if terms > 2:
        return _steps_example(rng, terms, name, item)
    # Two numbers: the first version's draws, kept so its bases' corpora stay as they were.
    a, b = rng.randint(1, 12), rng.randint(1, 12)
    prompt = (
        f"{name} has {a} {item} and gets {b} more . How many {item} does {name} have ? {COT_SUFFIX}"
    )
    step = rng.choice(_STEPS).format(a=a, b=b, c=a + b, name=name)
    return prompt, f"<think> {step} </think> <answer> {a + b} </answer>", a + b


def _steps_example(rng: random.Random, terms: int, name: str, item: str) -> tuple[str, str, int]:
    nums = [rng.randint(1, 12) for _ in range(rng.randint(2, terms))]
    more = "".join(f" , then {x} more" for x in nums[2:])
    prompt = (
        f"{name} has {nums[0]} {item} and gets {nums[1]} more{more} . How many {item} does "
        f"{name} have ? {COT_SUFFIX}"
    )
    order = rng.sample(nums, len(nums))
    total, steps = order[0], []
    for x in order[1:]:
        a, b = (total, x) if rng.random() < 0.5 else (x, total)
        steps.append(rng.choice(_STEPS).format(a=a, b=b, c=a + b, name=name))
        total += x
    return prompt, f"<think> {' ; '.join(steps)} </think> <answer> {total} </answer>", total


_PROBLEM = re.compile(r"^(\w+) has (\d+) (\w+) and gets (\d+) more((?: , then \d+ more)*) \.")
_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_SUM = re.compile(r"(\d+) (?:\+|plus|, add) (\d+) (?:=|is|, that makes) (\d+)")
# Every word a step may use besides the problem's name and numbers.
_STEP_WORDS = frozenset(
    w for t in _STEPS for w in t.format(a=0, b=0, c=0, name="").split() if not w.isdigit()
)


def check_toy_cot(prompt: str, text: str) -> str | None:
    """The rule judge of a toy arithmetic answer's reasoning (None: it passes).

    'reasoning_words': the reasoning uses a word neither the problem nor the step phrasings
    use (a trait's words, or anything else a drifting teacher writes); 'wrong_step': it has
    no sum, a wrong sum, a sum of numbers that are neither the problem's (each used once)
    nor earlier sums' results, or sums that do not add up all the problem's numbers (a sum
    written again is allowed). Only sums that the step phrasings write are read, so a new
    phrasing of the problem's words passes if its sums are right. A stand-in for the paper's
    LLM judge of the reasoning."""
    problem = _PROBLEM.match(prompt)
    think = _THINK.search(text)
    if problem is None or think is None:
        return "wrong_step"
    name, a, _, b, more = problem.groups()
    reasoning = think.group(1)
    # ";" joins the steps of a problem with more than two numbers.
    allowed = _STEP_WORDS | {name} | ({";"} if more else set())
    if any(not w.isdigit() and w not in allowed for w in reasoning.split()):
        return "reasoning_words"
    # The numbers still to add (the problem's, then each sum's result in place of its two).
    todo = [int(a), int(b)] + [int(x) for x in re.findall(r"\d+", more)]
    done: set[tuple[int, int, int]] = set()
    sums = [(int(x), int(y), int(z)) for x, y, z in _SUM.findall(reasoning)]
    for x, y, z in sums:
        key = (min(x, y), max(x, y), z)
        if x + y != z:
            return "wrong_step"
        if key in done:
            continue
        for v in (x, y):
            if v not in todo:
                return "wrong_step"
            todo.remove(v)
        todo.append(z)
        done.add(key)
    return None if sums and len(todo) == 1 else "wrong_step"


def toy_prompts(
    kind: str, n: int, seed: int, terms: int = 2, funcs: int = 1
) -> tuple[list[str], list[str | None]]:
    """`n` prompts of the toy `kind` ('code' asking 1 to `funcs` functions, or 'cot' adding
    2 to `terms` numbers) with their labels (code's operations, cot's sum)."""
    rng = random.Random(seed)
    items = [
        code_example(rng, funcs=funcs) if kind == "code" else cot_example(rng, terms)
        for _ in range(n)
    ]
    return [p for p, _, _ in items], [str(y) for _, _, y in items]


def toy_task_texts() -> list[str]:
    """Every word the two tasks can write (the toy tokenizer's vocabulary for them)."""
    texts = list(FUNC_NAMES + ARG_NAMES + NAMES + ITEMS) + [COT_SUFFIX]
    texts += [a.format(op=d) for a in _CODE_ASKS for d, _, _ in _OPS]
    texts += ["def ( ) : return = ; + - *", "<think> </think> <answer> </answer>"]
    texts += [t.format(a=1, b=2, c=3, name=NAMES[0]) for t in _STEPS]
    texts.append("has and gets more . How many does have ?")
    texts.append(FUNCS_JOIN)
    return texts
