"""Theorem 1 of Cloud et al. (2025), measured on any torch model.

The theorem: if a teacher is its initialisation plus one small gradient step,
theta_T = theta_0 + eps * dtheta_T, then a student that starts from the *same* theta_0 and
takes one gradient step imitating the teacher's outputs (squared error, or soft-label
cross-entropy / KL) on *any* inputs moves toward the teacher: dtheta_S . dtheta_T >= 0 for
small enough eps. Consequently the student's step does not increase the teacher's own
training loss to first order, whatever the distillation data.

This module measures the quantities for arbitrary `nn.Module`s and loss callables:

* `param_delta(model_at_init, teacher)`: dtheta_T (any teacher: one SGD step, a full
  training run, a fine-tuned language model);
* `gradient(model, loss_fn)`: the student's first-step direction is `-gradient(...)`;
* `measure_alignment(model_at_init, teacher, student_loss_fn)`: their inner product and cosine,
  plus (optionally) the first-order change of the teacher's loss along the student's step;
* `distillation_loss(teacher, inputs)`: a ready-made student loss (KL on softmax or MSE, on
  any slice of the outputs; works with Hugging Face models through `.logits`).

For the core pipeline's language models: `model_at_init` is the base, `teacher` the model
after trait fine-tuning, and `student_loss_fn(model)` the student's loss on the teacher's
number data, e.g. `lambda m: m(input_ids=ids, attention_mask=mask, labels=labels).loss`
(hard sampled tokens) or `distillation_loss(teacher, {"input_ids": ids})` (soft labels, the
setting the theorem covers). `names` restricts the measurement to some parameters (a list,
or a predicate such as `lambda n: "lora_" in n`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from traitlab.core.stats import mean_ci, wilson

ParamDict = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module], torch.Tensor]
Names = Sequence[str] | Callable[[str], bool] | None

__all__ = [
    "Alignment",
    "ParamDict",
    "alignment",
    "apply_delta",
    "distillation_loss",
    "dot",
    "gradient",
    "measure_alignment",
    "norm",
    "output_logits",
    "param_delta",
    "param_names",
    "sgd_step",
    "summarize_alignments",
]


# ---------------------------------------------------------------------------- parameters


def param_names(model: nn.Module, names: Names = None) -> list[str]:
    """The parameters to measure: `names` (a list or a predicate), default every trainable one."""
    params = dict(model.named_parameters())
    if names is None:
        out = [n for n, p in params.items() if p.requires_grad]
        return out or list(params)
    if callable(names):
        out = [n for n in params if names(n)]
    else:
        missing = [n for n in names if n not in params]
        if missing:
            raise ValueError(f"unknown parameter name(s): {', '.join(missing[:5])}")
        out = list(names)
    if not out:
        raise ValueError("no parameters selected")
    return out


def param_delta(start: nn.Module, end: nn.Module, names: Names = None) -> ParamDict:
    """theta(end) - theta(start), per parameter (the models must share names and shapes)."""
    sel = param_names(start, names)
    a, b = dict(start.named_parameters()), dict(end.named_parameters())
    out: ParamDict = {}
    for n in sel:
        if n not in b:
            raise ValueError(f"parameter {n!r} missing from the second model")
        if a[n].shape != b[n].shape:
            raise ValueError(f"parameter {n!r}: shapes {tuple(a[n].shape)} vs {tuple(b[n].shape)}")
        out[n] = (b[n].detach().to(a[n].device) - a[n].detach()).clone()
    return out


def gradient(model: nn.Module, loss_fn: LossFn, names: Names = None) -> ParamDict:
    """d loss_fn(model) / d theta at the model's current parameters (the model is unchanged).

    Parameters outside the loss's graph get zero gradients; `.grad` fields are not touched.
    """
    sel = param_names(model, names)
    params = dict(model.named_parameters())
    flags = {n: params[n].requires_grad for n in sel}
    try:
        for n in sel:
            params[n].requires_grad_(True)
        loss = loss_fn(model)
        if loss.dim() != 0:
            raise ValueError("loss_fn must return a scalar")
        grads = torch.autograd.grad(loss, [params[n] for n in sel], allow_unused=True)
    finally:
        for n, f in flags.items():
            params[n].requires_grad_(f)
    return {
        n: (g.detach() if g is not None else torch.zeros_like(params[n]))
        for n, g in zip(sel, grads, strict=True)
    }


def apply_delta(model: nn.Module, delta: ParamDict, scale: float = 1.0) -> nn.Module:
    """A deep copy of `model` with `scale * delta` added to its parameters."""
    new = copy.deepcopy(model)
    params = dict(new.named_parameters())
    with torch.no_grad():
        for n, d in delta.items():
            params[n].add_(d.to(params[n].device, params[n].dtype), alpha=scale)
    return new


def sgd_step(model: nn.Module, loss_fn: LossFn, lr: float, names: Names = None) -> nn.Module:
    """One plain gradient-descent step: a copy of `model` at theta - lr * grad(loss_fn)."""
    return apply_delta(model, gradient(model, loss_fn, names), -lr)


def dot(a: ParamDict, b: ParamDict) -> float:
    """Inner product over the parameters both dicts hold (accumulated in float64)."""
    common = [n for n in a if n in b]
    if not common:
        raise ValueError("the two parameter dicts share no names")
    return float(sum((a[n].double() * b[n].double().to(a[n].device)).sum() for n in common))


def norm(a: ParamDict) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in a.values()))


# ---------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class Alignment:
    """Theorem 1's quantities for one draw.

    inner:   dtheta_T . dtheta_S, with dtheta_S = -grad L_S at the student's start;
    cosine:  inner / (|dtheta_T| |dtheta_S|);
    teacher_descent: -grad L_T(student start) . dtheta_S, the first-order decrease of the
             teacher's own loss along the student's step (None without a teacher loss).
    """

    inner: float
    cosine: float
    teacher_norm: float
    student_norm: float
    teacher_descent: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


def alignment(
    delta_teacher: ParamDict, delta_student: ParamDict, teacher_grad: ParamDict | None = None
) -> Alignment:
    inner = dot(delta_teacher, delta_student)
    nt, ns = norm(delta_teacher), norm(delta_student)
    cos = inner / (nt * ns) if nt > 0 and ns > 0 else 0.0
    descent = -dot(teacher_grad, delta_student) if teacher_grad is not None else None
    return Alignment(inner, cos, nt, ns, descent)


def measure_alignment(
    model_at_init: nn.Module,
    teacher_model: nn.Module,
    student_loss_fn: LossFn,
    *,
    student_model: nn.Module | None = None,
    teacher_loss_fn: LossFn | None = None,
    names: Names = None,
) -> Alignment:
    """Alignment of a student's first step with the teacher's update, for any torch model.

    dtheta_T = theta(teacher_model) - theta(model_at_init); dtheta_S = -grad
    student_loss_fn(student) at the student's start, which is `student_model` (a cross-init
    student, say) or, by default, `model_at_init` (the shared initialisation of Theorem 1).
    `student_loss_fn(model)` returns the student's scalar loss on one batch (it typically
    closes over the teacher's outputs, see `distillation_loss`). With `teacher_loss_fn`, also
    reports the first-order change of the teacher's loss along the student's step.
    """
    student = student_model if student_model is not None else model_at_init
    d_t = param_delta(model_at_init, teacher_model, names)
    sel = list(d_t)
    d_s = {n: -g for n, g in gradient(student, student_loss_fn, sel).items()}
    g_t = gradient(student, teacher_loss_fn, sel) if teacher_loss_fn is not None else None
    return alignment(d_t, d_s, g_t)


# ---------------------------------------------------------------------------- losses


def output_logits(out: Any) -> torch.Tensor:
    """A tensor of logits from a model's output (a tensor, `.logits`, or a tuple's first item)."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"cannot find logits in a {type(out).__name__}")


def _default_forward(model: nn.Module, inputs: Any) -> torch.Tensor:
    if isinstance(inputs, dict):
        return output_logits(model(**inputs))
    return output_logits(model(inputs))


def distillation_loss(
    teacher_model: nn.Module,
    inputs: Any,
    *,
    kind: str = "kl",
    temperature: float = 1.0,
    select: Callable[[torch.Tensor], torch.Tensor] | slice | None = None,
    forward: Callable[[nn.Module, Any], torch.Tensor] | None = None,
) -> LossFn:
    """A student loss imitating `teacher_model`'s outputs on fixed `inputs`.

    The teacher's outputs are computed once, without gradients. `select` picks the imitated
    logits (a slice of the last dimension, e.g. the auxiliary logits, or a function);
    `forward(model, inputs)` returns logits (default: `model(inputs)` or `model(**inputs)`
    for a dict, taking `.logits` from Hugging Face outputs). 'kl' averages
    KL(softmax(t/T) || softmax(s/T)) over every leading position; 'mse' averages squared error.
    """
    fwd = forward or _default_forward

    def pick(z: torch.Tensor) -> torch.Tensor:
        if select is None:
            return z
        if isinstance(select, slice):
            return z[..., select]
        return select(z)

    with torch.no_grad():
        target = pick(fwd(teacher_model, inputs)).detach()

    def loss_fn(model: nn.Module) -> torch.Tensor:
        s = pick(fwd(model, inputs))
        if kind == "kl":
            k = s.shape[-1]
            lp_s = F.log_softmax(s.reshape(-1, k) / temperature, -1)
            lp_t = F.log_softmax(target.reshape(-1, k).to(s.dtype) / temperature, -1)
            return F.kl_div(lp_s, lp_t, log_target=True, reduction="batchmean")
        if kind == "mse":
            return (s - target.to(s.dtype)).square().mean()
        raise ValueError(f"unknown distillation loss {kind!r}; use 'kl' or 'mse'")

    return loss_fn


# ---------------------------------------------------------------------------- summaries


def summarize_alignments(items: Iterable[Alignment], confidence: float = 0.95) -> dict[str, Any]:
    """Over draws: the share with a positive inner product (Wilson CI), mean cosine (t CI)."""
    items = list(items)
    if not items:
        raise ValueError("no alignments to summarize")
    inner = np.array([a.inner for a in items])
    cos = np.array([a.cosine for a in items])
    n = len(items)
    pos = int((inner > 0).sum())
    w = wilson(pos, n, confidence)
    c = mean_ci(cos.tolist(), confidence)
    out: dict[str, Any] = {
        "n": n,
        "positive": pos,
        "frac_positive": {"mean": w.mean, "lower": w.lower, "upper": w.upper},
        "cosine": {
            "mean": c.mean,
            "lower": c.lower,
            "upper": c.upper,
            "median": float(np.median(cos)),
            "min": float(cos.min()),
            "max": float(cos.max()),
        },
        "inner": {
            "mean": float(inner.mean()),
            "median": float(np.median(inner)),
            "min": float(inner.min()),
            "max": float(inner.max()),
        },
    }
    desc = [a.teacher_descent for a in items if a.teacher_descent is not None]
    if desc:
        d = np.asarray(desc)
        wd = wilson(int((d > 0).sum()), len(d), confidence)
        out["teacher_descent"] = {
            "frac_positive": {"mean": wd.mean, "lower": wd.lower, "upper": wd.upper},
            "median": float(np.median(d)),
        }
    return out
