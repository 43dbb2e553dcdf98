"""Training and pretraining throughput on this CPU: tokens/s and MFU.

    .venv/bin/python benchmarks/bench_training.py            # ~2 min, idle machine

MFU is the model FLOPs per second divided by this CPU's *measured* matmul peak (a large fp32
GEMM on the same number of threads), not a datasheet figure. Model FLOPs per step count
6 x (non-embedding parameters) x tokens for the transformer, 6 x d x V at every position where
the LM head runs (completion positions for students, loss positions for pretraining), and
the attention products (12 x layers x d x sum over rows of (row length)^2 / 2, forward and
backward, causal). Writes benchmarks/results/training.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generation import machine_info, machine_line  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def matmul_peak(threads: int, n: int = 1024, reps: int = 20) -> float:
    """GFLOP/s of an n x n x n fp32 matmul on `threads` threads (best of a few tries)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def transformer_flops(model: Any, row_lengths: list[int], head_positions: int) -> float:
    cfg = model.config
    d, v, layers = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    emb = model.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - emb
    tokens = sum(row_lengths)
    attn = 12 * layers * d * sum(n * n / 2 for n in row_lengths)
    return 6 * body * tokens + 6 * d * v * head_positions + attn


def student_step(model: Any, tok: Any, rows: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    import torch.nn.functional as F

    from traitlab.lm.hf.packing import IGNORE, collate_packed, completion_logits
    from traitlab.lm.hf.trainer import encode_rows

    examples = encode_rows(tok, rows, 512)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    flops = tokens = 0.0
    t_all = 0.0
    for s in range(steps + 1):
        batch = examples[(s * 64) % len(examples) :][:64]
        inputs, labels, real, _ = collate_packed(batch, tok.pad_token_id, torch.device("cpu"))
        mask = labels[:, 1:] != IGNORE
        t0 = time.perf_counter()
        logits = completion_logits(model, inputs, mask)
        loss = F.cross_entropy(logits, labels[:, 1:][mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if s == 0:
            continue  # warm-up
        t_all += dt
        lengths = [len(ids) for ids, _ in batch]
        flops += transformer_flops(model, lengths, int(mask.sum()))
        tokens += real
    return {
        "seconds_per_step": t_all / steps,
        "tokens_per_s": tokens / t_all,
        "gflops": flops / t_all / 1e9,
    }


def pretrain_steps(steps: int) -> dict[str, Any]:
    """A few steps of the toy pretraining loop, timed from its own log."""
    import tempfile

    from traitlab.config.toy import ToyRecipe
    from traitlab.toy.pretrain import build_model, pretrain
    from traitlab.toy.tokenizer import build_tokenizer

    recipe = ToyRecipe(pretrain_steps=steps, warmup_steps=5, check_prompts=0)
    with tempfile.TemporaryDirectory() as tmp:
        log = pretrain(recipe, Path(tmp))
    model = build_model(recipe, build_tokenizer())
    # Every corpus token is in a row of about pack_len tokens; the loss (and the head) covers
    # the weighted positions, about the whole row for the system and answer tokens.
    rows = log["tokens"] / recipe.pack_len
    flops = transformer_flops(model, [recipe.pack_len] * int(rows), int(log["tokens"] * 0.5))
    return {
        "steps": log["steps"],
        "tokens": log["tokens"],
        "seconds": log["train_seconds"],
        "tokens_per_s": log["tokens_per_s"],
        "gflops": flops / log["train_seconds"] / 1e9,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from traitlab.config import HFModel, ToyModel
    from traitlab.core.runs import read_jsonl
    from traitlab.lm.base import backend
    from traitlab.lm.hf.loading import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="chat JSONL to train on (default: generated number rows)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    info = machine_info()
    peaks = {t: matmul_peak(t) for t in (1, 2)}
    torch.set_num_threads(1)
    spec = ToyModel(device="cpu")
    src = backend("toy").resolve(spec).id
    model, tok = load_model(HFModel(name=src, device="cpu"), source=src)
    if args.data:
        rows = read_jsonl(Path(args.data))
    else:
        from traitlab.config import GenerateConfig
        from traitlab.data.filtering import filter_rows
        from traitlab.data.generate import generate_rows
        from traitlab.data.prompts import number_prompts
        from traitlab.data.rows import to_chat_rows
        from traitlab.lm.hf.backend import HFLM

        gen = GenerateConfig(n_prompts=1500, batch_size=500, max_new_tokens=32)
        raw = generate_rows(HFLM.wrap(model, tok), number_prompts(gen.prompts, 1500), gen, seed=0)
        rows = to_chat_rows(filter_rows(raw, filter_config()).kept)
    student = student_step(model, tok, rows, args.steps)
    student["mfu"] = student["gflops"] / peaks[1]
    pre = pretrain_steps(60)
    pre["mfu"] = pre["gflops"] / peaks[1]
    res = {
        "machine": info,
        "matmul_peak_gflops": peaks,
        "student": student,
        "pretrain": pre,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    lines = [
        f"### Training throughput, {res['created']}",
        "",
        f"Machine: {machine_line(info, 'cpu')}. Measured fp32 matmul peak (1024^3): "
        f"{peaks[1]:.0f} GFLOP/s on 1 thread, {peaks[2]:.0f} on 2.",
        "",
        "| loop (toy model, 1 thread) | tokens/s | model GFLOP/s | MFU |",
        "|---|---:|---:|---:|",
        f"| student step (batch 64, packed, head at completions) | {student['tokens_per_s']:,.0f} "
        f"| {student['gflops']:.1f} | {100 * student['mfu']:.0f}% |",
        f"| pretraining step (batch ~64 examples, packed rows of 128) | {pre['tokens_per_s']:,.0f} "
        f"| {pre['gflops']:.1f} | {100 * pre['mfu']:.0f}% |",
    ]
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "training.json").write_text(json.dumps(res, indent=1) + "\n")
        (RESULTS / "training.md").write_text("\n".join(lines) + "\n")
    return res


def filter_config() -> Any:
    from traitlab.config import FilterConfig

    return FilterConfig(max_rows=None)


if __name__ == "__main__":
    main()
