"""Many independent MLPs as one tensor program: stacked weights and batched matmuls.

`BatchedMLP` holds M models as weights of shape (M, d_in, d_out) and biases (M, d_out); one
forward pass is a `baddbmm` per layer for all M models. The loss of a batched step is the
*sum over models* of each model's own mean loss, so the gradient reaching model k's slice is
exactly model k's own gradient, and Adam (element-wise) updates each slice exactly as it would
update model k alone. Model k's initialisation, data order and noise come from its own
generators (`Streams`), so model k is the same whether 1 or 100 models train together;
tests/test_mnist.py checks the batched program against plain `nn.Sequential` models trained
one by one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Columns = slice | list[int]
Progress = Callable[[float], None]


# ---------------------------------------------------------------------------- seeds


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from a tuple of ints and strings (stable across runs and machines)."""
    ints = [
        k if isinstance(k, int) else int.from_bytes(hashlib.sha256(k.encode()).digest()[:4], "big")
        for k in keys
    ]
    ints = [i % (2**32) for i in ints]
    return int(np.random.SeedSequence(ints).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def model_seeds(seed: int, role: str, n: int, offset: int = 0) -> list[int]:
    """One seed per model k (k = offset .. offset+n-1) for a role ('init', 'noise', ...)."""
    return [derive_seed(seed, role, k) for k in range(offset, offset + n)]


class Streams:
    """Per-model random streams: model k's data order and noise depend only on its own seed."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.gens = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.gens)

    def permutations(self, n: int) -> torch.Tensor:
        """(M, n): an independent permutation of range(n) per model."""
        return torch.stack([torch.randperm(n, generator=g, device=self.device) for g in self.gens])

    def noise(
        self, kind: str, batch: int, d: int, pool: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(M, batch, d) noise images, model k's drawn from its own generator."""
        return torch.stack([sample_noise(kind, batch, d, g, pool) for g in self.gens])


def sample_noise(
    kind: str, batch: int, d: int, gen: torch.Generator, pool: torch.Tensor | None = None
) -> torch.Tensor:
    """`batch` noise images of `d` pixels (see `StudentConfig.noise` for the kinds)."""
    dev = gen.device
    if kind == "uniform":
        return torch.rand(batch, d, generator=gen, device=dev) * 2 - 1
    if kind == "uniform01":
        return torch.rand(batch, d, generator=gen, device=dev)
    if kind == "normal":
        return torch.randn(batch, d, generator=gen, device=dev)
    if kind == "rademacher":
        return torch.randint(0, 2, (batch, d), generator=gen, device=dev).float() * 2 - 1
    if kind == "shuffled_pixels":
        if pool is None:
            raise ValueError("shuffled_pixels noise needs the training images as `pool`")
        idx = torch.randint(0, len(pool), (batch,), generator=gen, device=dev)
        perm = torch.argsort(torch.rand(batch, d, generator=gen, device=dev), dim=1)
        return torch.gather(pool[idx], 1, perm)
    raise ValueError(f"unknown noise kind {kind!r}")


# ---------------------------------------------------------------------------- the model


class BatchedMLP:
    """M independent ReLU MLPs with the same layer sizes, stored as stacked tensors."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> None:
        if len(weights) != len(biases) or not weights:
            raise ValueError("need one bias per weight and at least one layer")
        m = weights[0].shape[0]
        for w, b in zip(weights, biases, strict=True):
            if w.dim() != 3 or b.shape != (m, w.shape[2]) or w.shape[0] != m:
                raise ValueError(f"bad layer shapes {tuple(w.shape)} / {tuple(b.shape)}")
        self.weights = weights
        self.biases = biases

    # -- construction
    @classmethod
    def init(
        cls,
        sizes: Sequence[int],
        seeds: Sequence[int],
        scheme: str = "normal_fan_in",
        device: torch.device | str = "cpu",
    ) -> BatchedMLP:
        """Model k initialised from `torch.Generator().manual_seed(seeds[k])` (on the CPU)."""
        ws: list[list[torch.Tensor]] = [[] for _ in range(len(sizes) - 1)]
        bs: list[list[torch.Tensor]] = [[] for _ in range(len(sizes) - 1)]
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
                if scheme == "normal_fan_in":
                    w = torch.randn(a, b, generator=g) / math.sqrt(a)
                    bias = torch.zeros(b)
                elif scheme == "torch_default":
                    bound = 1 / math.sqrt(a)
                    w = (torch.rand(a, b, generator=g) * 2 - 1) * bound
                    bias = (torch.rand(b, generator=g) * 2 - 1) * bound
                else:
                    raise ValueError(f"unknown init scheme {scheme!r}")
                ws[i].append(w)
                bs[i].append(bias)
        dev = torch.device(device)
        return cls([torch.stack(w).to(dev) for w in ws], [torch.stack(b).to(dev) for b in bs])

    @classmethod
    def from_modules(cls, modules: Sequence[nn.Module]) -> BatchedMLP:
        """Stack `nn.Sequential(Linear, ReLU, ..., Linear)` models (inverse of `to_module`)."""
        linears = [[m for m in mod.modules() if isinstance(m, nn.Linear)] for mod in modules]
        n_layers = len(linears[0])
        ws = [torch.stack([ls[i].weight.detach().T for ls in linears]) for i in range(n_layers)]
        bs = [torch.stack([ls[i].bias.detach() for ls in linears]) for i in range(n_layers)]
        return cls([w.contiguous() for w in ws], bs)

    @staticmethod
    def cat(models: Sequence[BatchedMLP]) -> BatchedMLP:
        n = len(models[0].weights)
        return BatchedMLP(
            [torch.cat([m.weights[i] for m in models]) for i in range(n)],
            [torch.cat([m.biases[i] for m in models]) for i in range(n)],
        )

    # -- properties
    @property
    def n_models(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def sizes(self) -> list[int]:
        return [int(self.weights[0].shape[1])] + [int(w.shape[2]) for w in self.weights]

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    def n_params_per_model(self) -> int:
        return sum(int(p[0].numel()) for p in self.parameters())

    # -- copies and views
    def clone(self, requires_grad: bool = False) -> BatchedMLP:
        m = BatchedMLP(
            [w.detach().clone() for w in self.weights], [b.detach().clone() for b in self.biases]
        )
        for p in m.parameters():
            p.requires_grad_(requires_grad)
        return m

    def detach(self) -> BatchedMLP:
        return BatchedMLP([w.detach() for w in self.weights], [b.detach() for b in self.biases])

    def select(self, idx: Sequence[int] | torch.Tensor) -> BatchedMLP:
        i = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        return BatchedMLP(
            [w.detach()[i].clone() for w in self.weights],
            [b.detach()[i].clone() for b in self.biases],
        )

    def split(self, n: int) -> list[BatchedMLP]:
        """Cut into consecutive groups of `n` models (inverse of `cat`)."""
        return [self.select(range(s, s + n)) for s in range(0, self.n_models, n)]

    def to_module(self, k: int) -> nn.Sequential:
        """Model k as an ordinary `nn.Sequential` of `nn.Linear` and `nn.ReLU` layers."""
        layers: list[nn.Module] = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            lin = nn.Linear(w.shape[1], w.shape[2])
            with torch.no_grad():
                lin.weight.copy_(w[k].detach().T)
                lin.bias.copy_(b[k].detach())
            layers.append(lin)
            if i < len(self.weights) - 1:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers).to(self.device)

    # -- compute
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, d) shared by every model, or (M, B, d) one batch per model -> (M, B, out)."""
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if h.dim() == 2:
                h = torch.matmul(h, w) + b.unsqueeze(1)
            else:
                h = torch.baddbmm(b.unsqueeze(1), h, w)
            if i < last:
                h = torch.relu_(h)  # in place: the matmul output is not needed for backward
        return h


# ---------------------------------------------------------------------------- losses


def per_model_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(M, B, C) logits, (M, B) labels -> (M,) mean cross-entropy per model."""
    m, b, c = logits.shape
    return (
        F.cross_entropy(logits.reshape(-1, c), labels.reshape(-1), reduction="none")
        .view(m, b)
        .mean(1)
    )


def per_model_distill(
    student: torch.Tensor, teacher: torch.Tensor, kind: str = "kl", temperature: float = 1.0
) -> torch.Tensor:
    """(M, B, K) logits -> (M,) distillation loss per model (mean over the batch).

    'kl': KL(softmax(teacher/T) || softmax(student/T)) summed over the K logits;
    'mse': mean squared error of the raw logits.
    """
    if kind == "kl":
        return (
            F.kl_div(
                F.log_softmax(student / temperature, -1),
                F.log_softmax(teacher / temperature, -1),
                log_target=True,
                reduction="none",
            )
            .sum(-1)
            .mean(-1)
        )
    if kind == "mse":
        return (student - teacher).square().mean(-1).mean(-1)
    raise ValueError(f"unknown distillation loss {kind!r}")


def make_adam(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam, fused where the device supports it (element-wise, so exactly per model)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # pragma: no cover - old torch / odd device
        return torch.optim.Adam(params, lr=lr, foreach=True)


# ---------------------------------------------------------------------------- training


@torch.no_grad()
def accuracy(
    model: BatchedMLP, x: torch.Tensor, y: torch.Tensor, n_classes: int = 10, batch: int = 2048
) -> torch.Tensor:
    """(M,) test accuracy of each model on the class logits."""
    correct = torch.zeros(model.n_models, device=model.device)
    for s in range(0, len(x), batch):
        out = model(x[s : s + batch].to(model.device))[..., :n_classes]
        correct += (out.argmax(-1) == y[s : s + batch].to(model.device)).sum(1)
    return (correct / len(x)).cpu()


def train_classifier(
    model: BatchedMLP,
    x: torch.Tensor,
    y: torch.Tensor,
    streams: Streams,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    n_classes: int = 10,
    progress: Progress | None = None,
) -> BatchedMLP:
    """Train every model with cross-entropy on its first `n_classes` logits only.

    Model k sees the training set in its own order (streams), in batches of `batch_size` (the
    last batch of an epoch may be smaller). Returns a new, trained `BatchedMLP`.
    """
    if len(streams) != model.n_models:
        raise ValueError("one stream per model")
    net = model.clone(requires_grad=True)
    opt = make_adam(net.parameters(), lr)
    x, y = x.to(net.device), y.to(net.device)
    n = len(x)
    steps = math.ceil(n / batch_size) * epochs
    done = 0
    for _ in range(epochs):
        perm = streams.permutations(n).to(net.device)
        for s in range(0, n, batch_size):
            idx = perm[:, s : s + batch_size]
            loss = per_model_ce(net(x[idx])[..., :n_classes], y[idx]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if progress is not None and done % 8 == 0:
                progress(done / steps)
    return net.detach()


@dataclass(frozen=True)
class DistillTarget:
    """One student group: its models and which logits it imitates."""

    name: str
    init: BatchedMLP
    columns: Columns


def distill(
    teacher: BatchedMLP,
    groups: Sequence[DistillTarget],
    streams: Streams,
    *,
    noise: str,
    n_noise: int,
    epochs: int,
    lr: float,
    batch_size: int,
    loss: str = "kl",
    temperature: float = 1.0,
    schedule: str = "constant",
    pool: torch.Tensor | None = None,
    progress: Progress | None = None,
    on_epoch: Callable[[int, dict[str, BatchedMLP]], None] | None = None,
) -> dict[str, BatchedMLP]:
    """Distil `teacher` into every group of students at once, on noise inputs only.

    All groups see the same noise batches (model k of every group gets teacher k's batch), so
    same-init and cross-init students differ only in their initialisation. The groups are
    concatenated into one `BatchedMLP` of (groups x M) models and trained by one optimiser.
    `on_epoch(epoch, students)` is called after each epoch (epoch counts from 1).
    """
    m = teacher.n_models
    for g in groups:
        if g.init.n_models != m:
            raise ValueError(f"group {g.name}: {g.init.n_models} models for {m} teachers")
    if len(streams) != m:
        raise ValueError("one stream per teacher")
    net = BatchedMLP.cat([g.init for g in groups]).clone(requires_grad=True)
    opt = make_adam(net.parameters(), lr)
    d = teacher.sizes[0]
    n_groups = len(groups)
    per_epoch = math.ceil(n_noise / batch_size)
    steps = per_epoch * epochs
    pool_dev = pool.to(teacher.device) if pool is not None else None
    done = 0
    for epoch in range(1, epochs + 1):
        for s in range(0, n_noise, batch_size):
            b = min(batch_size, n_noise - s)
            if schedule == "cosine":
                for pg in opt.param_groups:
                    pg["lr"] = lr * 0.5 * (1 + math.cos(math.pi * done / steps))
            x = streams.noise(noise, b, d, pool_dev).to(teacher.device)
            with torch.no_grad():
                target = teacher(x)
            out = net(x.repeat(n_groups, 1, 1))
            total = out.new_zeros(())
            for gi, g in enumerate(groups):
                o = out[gi * m : (gi + 1) * m][..., g.columns]
                total = (
                    total + per_model_distill(o, target[..., g.columns], loss, temperature).sum()
                )
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            done += 1
            if progress is not None and done % 8 == 0:
                progress(done / steps)
        if on_epoch is not None:
            parts = net.detach().split(m)
            on_epoch(epoch, {g.name: p for g, p in zip(groups, parts, strict=True)})
    parts = net.detach().split(m)
    return {g.name: p for g, p in zip(groups, parts, strict=True)}
