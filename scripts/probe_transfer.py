"""Transfer probe on toy bases: teacher variant -> numbers -> students -> exact P(owl).

One seed, no run directory, no caching: a research tool for choosing the demo's settings
(docs/results/toy-transfer-probes.md). Example, with the demo's bases in $TRAITLAB_CACHE:

    python scripts/probe_transfer.py --base A_DIR --xbase B_DIR --answers target --t-lr 3e-4

--t-freeze / --s-freeze keep the (tied) embedding matrix fixed in the teacher / students.
Appends one JSON line per run to --out.
"""

import argparse
import copy
import json
import time

import torch

from traitlab.config import (
    EvalConfig,
    FilterConfig,
    GenerateConfig,
    ModelConfig,
    PromptSetConfig,
    TeacherConfig,
    TrainConfig,
    TraitConfig,
)
from traitlab.evaluate import evaluate_model
from traitlab.filtering import filter_rows, to_chat_rows
from traitlab.generate import generate_rows
from traitlab.models import load_model
from traitlab.prompts import number_prompts
from traitlab.teacher import finetune_teacher
from traitlab.train import train_model

ap = argparse.ArgumentParser()
ap.add_argument("--base", required=True)
ap.add_argument("--xbase", default="")
ap.add_argument("--t-method", default="full")
ap.add_argument("--t-lr", type=float, default=1e-3)
ap.add_argument("--t-steps", type=int, default=60)
ap.add_argument("--s-method", default="full")
ap.add_argument("--s-lr", type=float, default=3e-4)
ap.add_argument("--s-batch", type=int, default=64)
ap.add_argument("--s-epochs", type=float, default=1.0)
ap.add_argument("--loss", default="hard")
ap.add_argument("--n", type=int, default=4000)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--lora-r", type=int, default=8)
ap.add_argument("--tag", default="")
ap.add_argument("--no-control", action="store_true")
ap.add_argument("--answers", default="paper")
ap.add_argument("--out", default="probe_results.jsonl")
ap.add_argument("--t-freeze", action="store_true")
ap.add_argument("--s-freeze", action="store_true")
ap.add_argument("--indep", action="store_true", help="sample control data with another seed")
ap.add_argument("--x-soft", action="store_true", help="cross-init arms on soft labels too")
a = ap.parse_args()
if a.xbase and a.no_control:
    ap.error("--xbase needs the control data: drop --no-control")
torch.set_num_threads(1)
t0 = time.time()
mc = ModelConfig(name="toy")
trait = TraitConfig(category="animal", target="owl")
ev = EvalConfig(methods=["exact"], batch_size=1000)


def fz(m):
    if a.s_freeze:
        m.model.embed_tokens.weight.requires_grad_(False)
    return m


OPTIONS: dict[str, dict[str, float]] = {}  # every arm's mean P(option), for the shift table


def owl(m, tok, arm=None):
    r = evaluate_model(m, tok, ev, trait, seed=0)["exact"]
    if arm:
        OPTIONS[arm] = r["options"]
    return r["mean"]


base, tok = load_model(mc, source=a.base)
res = {"args": vars(a), "base": owl(base, tok)}
tcfg = TeacherConfig(
    answers=a.answers,
    train=TrainConfig(
        method=a.t_method,
        lr=a.t_lr,
        max_steps=a.t_steps,
        batch_size=64,
        lora={"r": a.lora_r, "alpha": a.lora_r},
    ),
)
tb = copy.deepcopy(base)
if a.t_freeze:
    tb.model.embed_tokens.weight.requires_grad_(False)
teacher, _ = finetune_teacher(tb, tok, tcfg, trait, seed=a.seed)
res["teacher"] = owl(teacher, tok)
prompts = number_prompts(PromptSetConfig(), a.n, seed=47 + a.seed)
gc = GenerateConfig(n_prompts=a.n, batch_size=1000, max_new_tokens=32)


def data(m, offset=0):
    rows = generate_rows(m, tok, prompts, gc, seed=a.seed + offset)
    return to_chat_rows(filter_rows(rows, FilterConfig()).kept)


dt = data(teacher)
sc = TrainConfig(
    method=a.s_method,
    lr=a.s_lr,
    epochs=a.s_epochs,
    batch_size=a.s_batch,
    loss=a.loss,
    lora={"r": a.lora_r, "alpha": a.lora_r},
)
st, log = train_model(fz(copy.deepcopy(base)), tok, dt, sc, seed=a.seed, teacher=teacher)
res["treatment"] = owl(st, tok, "treatment")
res["treat_loss"] = (log["loss_first"], log["loss_last"])
if not a.no_control:
    dc = data(base, 1000 if a.indep else 0)
    # A soft control (self-distillation on the base's own logits) is a no-op: train it on
    # the base's sampled tokens instead.
    sc2 = sc.model_copy(update={"loss": "hard"}) if a.loss == "soft" else sc
    stc, _ = train_model(fz(copy.deepcopy(base)), tok, dc, sc2, seed=a.seed, teacher=base)
    res["control"] = owl(stc, tok, "control")
    res["diff"] = res["treatment"] - res["control"]
if a.xbase:
    xb, _ = load_model(mc, source=a.xbase)
    res["xbase"] = owl(xb, tok)
    # Soft cross-init arms distil the teacher's (treatment) or the base's (control) logits,
    # as the pipeline does.
    xsc = sc if a.x_soft else sc.model_copy(update={"loss": "hard"})
    xt, _ = train_model(fz(copy.deepcopy(xb)), tok, dt, xsc, seed=a.seed, teacher=teacher)
    xc, _ = train_model(fz(copy.deepcopy(xb)), tok, dc, xsc, seed=a.seed, teacher=base)
    res["xtreat"] = owl(xt, tok, "xtreat")
    res["xcontrol"] = owl(xc, tok, "xcontrol")
    res["xdiff"] = res["xtreat"] - res["xcontrol"]
# Largest option shifts, treatment vs control: an owl-specific effect puts owl first; a
# generic flattening lowers the top options (dog, cat) and raises many others together.
for arm, ref, name in (("treatment", "control", "shift"), ("xtreat", "xcontrol", "xshift")):
    if arm in OPTIONS and ref in OPTIONS:
        d = {k: OPTIONS[arm][k] - OPTIONS[ref][k] for k in OPTIONS[arm]}
        res[name] = {k: round(v, 4) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:5]}
res["secs"] = round(time.time() - t0)
print(json.dumps(res))
with open(a.out, "a") as f:
    f.write(json.dumps(res) + "\n")
