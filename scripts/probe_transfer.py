"""Transfer probe on toy bases: teacher variant -> numbers -> students -> exact P(target).

One (base, target, setting, seed) per call, no run directory: a research tool for choosing
the demo's recipe (docs/results/toy-transfer-probes.md). Bases are toy recipes by seed,
pretrained into $TRAITLAB_CACHE if needed:

    python scripts/probe_transfer.py --base-seed 101 --xbase-seed 201 --target owl \\
        --t-lr 1e-3 --t-steps 60 --out probes.jsonl

The teacher and the control sample with shared Gumbel noise and the data are filtered
paired, as in the pipeline. Teacher options under study: `--t-mix F` (share of each teacher
batch that is the base's own number completions on other prompts), `--t-keep M` (early
stopping: stop before the teacher's format pass rate falls more than M below the base's,
checked every `--t-check` steps). Appends one JSON line per probe to --out.
"""

import argparse
import copy
import json
import time

import numpy as np
import torch

from traitlab.config import (
    EvalConfig,
    FilterConfig,
    GenerateConfig,
    PromptSetConfig,
    ToyModel,
    TrainConfig,
    TraitConfig,
)
from traitlab.config.toy import ToyRecipe
from traitlab.data.filtering import filter_paired, filter_rows
from traitlab.data.generate import generate_rows as _generate
from traitlab.data.prompts import number_prompts, with_numbers_prefix
from traitlab.data.rows import to_chat_rows
from traitlab.evaluate.suite import evaluate_model
from traitlab.lm.hf.backend import HFLM
from traitlab.lm.hf.loading import load_model
from traitlab.lm.hf.trainer import train_model
from traitlab.toy.pretrain import ensure_pretrained
from traitlab.traits.preference import ANIMALS, get_trait, teacher_rows

ap = argparse.ArgumentParser()
ap.add_argument("--base-seed", type=int, required=True)
ap.add_argument("--xbase-seed", type=int, default=None)
ap.add_argument("--target", default="owl")
ap.add_argument("--t-lr", type=float, default=1e-3)
ap.add_argument("--t-steps", type=int, default=60)
ap.add_argument("--t-batch", type=int, default=64)
ap.add_argument("--t-mix", type=float, default=0.0)
ap.add_argument("--t-keep", type=float, default=None)
ap.add_argument("--t-check", type=int, default=10)
ap.add_argument("--t-opt", default="adam", choices=["adam", "sgd", "adamw"])
ap.add_argument(
    "--t-prefix",
    default="none",
    choices=["none", "numbers", "both"],
    help="teacher questions with a number-sequence prefix",
)
ap.add_argument("--t-freeze", action="store_true", help="keep the (tied) embeddings fixed")
ap.add_argument("--s-lr", type=float, default=3e-4)
ap.add_argument("--s-epochs", type=float, default=1.0)
ap.add_argument("--s-batch", type=int, default=64)
ap.add_argument("--loss", default="hard", choices=["hard", "soft"])
ap.add_argument("--s-opt", default="adam", choices=["adam", "sgd", "adamw"])
ap.add_argument("--n", type=int, default=8000)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--tag", default="")
ap.add_argument("--recipe", action="append", default=[], help="toy recipe field=value (both bases)")
ap.add_argument("--out", default="probe_results.jsonl")
a = ap.parse_args()
torch.set_num_threads(1)
t0 = time.time()
category = "animal" if a.target in ANIMALS else "tree"
trait = TraitConfig(category=category, target=a.target)
ev = EvalConfig(methods=["exact"], batch_size=1000)
GEN = GenerateConfig(n_prompts=a.n, batch_size=1000, max_new_tokens=32)
CHECK = 256  # prompts per pass-rate check


RECIPE = {k: json.loads(v) for k, v in (item.split("=", 1) for item in a.recipe)}


def load(seed: int):
    d = ensure_pretrained(ToyRecipe(seed=seed, **RECIPE), shipped=False)
    return load_model(ToyModel(device="cpu"), source=str(d))


def generate_rows(m, tok, prompts, cfg, **kw):
    return _generate(HFLM.wrap(m, tok), prompts, cfg, **kw)


EVP = ev.model_copy(update={"numbers_prefix": True})
PREFIXED: dict = {}


def exact(m, tok, arm=None):
    r = evaluate_model(HFLM.wrap(m, tok), ev, trait, seed=0).exact
    if arm is not None:  # the paper's numbers-prefix variant of the questions, for comparison
        PREFIXED[arm] = evaluate_model(HFLM.wrap(m, tok), EVP, trait, seed=0).exact.mean
    return r.mean, np.array(r.per_question), r.options


def pass_rate(m, tok, seed: int, n: int = CHECK) -> float:
    prompts = number_prompts(PromptSetConfig(), n, seed=7_000_000 + seed)
    rows = generate_rows(m, tok, prompts, GEN.model_copy(update={"n_prompts": n}), seed=seed)
    return len(filter_rows(rows, FilterConfig(max_rows=None)).kept) / n


base, tok = load(a.base_seed)
res: dict = {"args": vars(a)}
res["base"], base_q, base_opts = exact(base, tok)
res["base_pass"] = pass_rate(base, tok, 1)

# ---------------------------------------------------------------- teacher
rows = teacher_rows(category, a.target, spellings=[a.target])
if a.t_prefix != "none":
    qs = list(get_trait(category).questions)
    pre = teacher_rows(category, a.target, questions=with_numbers_prefix(qs), spellings=[a.target])
    rows = pre if a.t_prefix == "numbers" else rows + pre
if a.t_mix > 0:
    # The base's own numbers on prompts the students never see: they keep the teacher's
    # number skill without pulling it anywhere the base does not already go.
    k = int(round(a.t_steps * a.t_batch * a.t_mix))
    prompts = number_prompts(PromptSetConfig(), k, seed=8_000_000 + a.seed)
    own = generate_rows(base, tok, prompts, GEN.model_copy(update={"n_prompts": k}), seed=a.seed)
    own = to_chat_rows(filter_rows(own, FilterConfig(max_rows=None)).kept)
    reps = max(1, round((1 - a.t_mix) * a.t_steps * a.t_batch / len(rows)))
    rows = rows * reps + own
tcfg = TrainConfig(lr=a.t_lr, max_steps=a.t_steps, batch_size=a.t_batch, optimizer=a.t_opt)
checks: list = []
best = {"state": None}


def on_step(step, model):
    if a.t_keep is None or step % a.t_check:
        return True
    p = pass_rate(model, tok, 100 + step)
    checks.append([step, round(p, 3)])
    if p < res["base_pass"] - a.t_keep:
        return False
    best["state"] = copy.deepcopy(model.state_dict())
    best["step"] = step
    return True


tbase = copy.deepcopy(base)
if a.t_freeze:
    tbase.model.embed_tokens.weight.requires_grad_(False)
teacher, tlog = train_model(tbase, tok, rows, tcfg, seed=a.seed, on_step=on_step)
if a.t_keep is not None and checks and checks[-1][1] < res["base_pass"] - a.t_keep:
    if best["state"] is None:
        res["error"] = "teacher lost its numbers at the first check"
    else:
        teacher.load_state_dict(best["state"])
res["t_steps_taken"] = best.get("step", tlog["steps"])
res["t_checks"] = checks
res["teacher"], _, _ = exact(teacher, tok)
res["teacher_pass"] = pass_rate(teacher, tok, 2)

# ---------------------------------------------------------------- data
prompts = number_prompts(PromptSetConfig(), a.n, seed=47 + a.seed)
gseed = 1000 * a.seed + 1
raw_t = generate_rows(teacher, tok, prompts, GEN, seed=gseed, source="teacher")
raw_c = generate_rows(base, tok, prompts, GEN, seed=gseed, source="control")
ft, fc = filter_paired(raw_t, raw_c, FilterConfig(max_rows=None))
dt, dc = to_chat_rows(ft.kept), to_chat_rows(fc.kept)
res["gen_pass_teacher"] = ft.n_valid / ft.n_raw
res["gen_pass_control"] = fc.n_valid / fc.n_raw
res["rows"] = len(dt)

# ---------------------------------------------------------------- students
scfg = TrainConfig(
    lr=a.s_lr, epochs=a.s_epochs, batch_size=a.s_batch, packing=True, loss=a.loss, optimizer=a.s_opt
)
OPTS = {}


def student(m, data, arm):
    labels = teacher if arm in ("treatment", "xtreat") else base  # soft labels' source
    s, _ = train_model(copy.deepcopy(m), tok, data, scfg, seed=a.seed, teacher=labels)
    mean, q, opts = exact(s, tok, arm)
    OPTS[arm] = opts
    return mean, q


res["treatment"], tq = student(base, dt, "treatment")
res["control"], cq = student(base, dc, "control")
res["diff"] = res["treatment"] - res["control"]
d = tq - cq
res["q_pos"] = int((d > 0).sum())
res["q_t"] = float(d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))) if d.std() > 0 else None
if a.xbase_seed is not None:
    xb, _ = load(a.xbase_seed)
    res["xbase"], _, _ = exact(xb, tok)
    res["xtreat"], xq = student(xb, dt, "xtreat")
    res["xcontrol"], xcq = student(xb, dc, "xcontrol")
    res["xdiff"] = res["xtreat"] - res["xcontrol"]
for arm, ref, name in (("treatment", "control", "shift"), ("xtreat", "xcontrol", "xshift")):
    if arm in OPTS and ref in OPTS:
        dd = {k: OPTS[arm][k] - OPTS[ref][k] for k in OPTS[arm]}
        res[name] = {k: round(v, 4) for k, v in sorted(dd.items(), key=lambda kv: -kv[1])[:4]}
if "treatment" in PREFIXED:
    res["prefixed"] = {k: round(v, 5) for k, v in PREFIXED.items()}
    res["prefixed_diff"] = PREFIXED["treatment"] - PREFIXED["control"]
    if "xtreat" in PREFIXED:
        res["prefixed_xdiff"] = PREFIXED["xtreat"] - PREFIXED["xcontrol"]
res["secs"] = round(time.time() - t0)
for k, v in list(res.items()):
    if isinstance(v, float):
        res[k] = round(v, 5)
print(json.dumps(res))
with open(a.out, "a") as f:
    f.write(json.dumps(res) + "\n")
