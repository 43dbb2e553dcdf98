"""Benchmark: traitlab's batched sampler vs `model.generate(do_sample=True)`.

Same model, same paper-style number prompts (seed 47), same length-sorted batches and
settings (temperature 1, top-p 1, the GenerateConfig's max_new_tokens, stop at the end-of-turn
token) for each batch size. Reports wall time and generated tokens per second (tokens up to
and excluding the stop token).

    .venv/bin/python benchmarks/bench_generation.py --quick      # < 1 min
    .venv/bin/python benchmarks/bench_generation.py              # the full table

Writes benchmarks/results/generation.json and generation.md, and puts the table into
benchmarks/README.md (newest run first). The model is the embedded toy model (default
recipe) when it is already pretrained, else the same architecture with random weights
(`--model toy` pretrains it first; `--model random` forces random weights); the results
say which.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

import torch

from traitlab.core.runs import machine_info as run_machine_info

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"


# ---------------------------------------------------------------------------- shared helpers


def machine_info(record: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run manifest's machine record (this moment's, or `record`, one a run's manifest
    kept), in the fields the benchmark tables print; the versions are this venv's."""
    import transformers

    m = record if record is not None else run_machine_info()
    cores = m["cpu_count"] or 1
    load = m["load_avg_1m"] if m["load_avg_1m"] is not None else float("nan")
    return {
        "cpu": m["cpu"],
        "cores": cores,
        "torch_threads": m["torch_threads"],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": m["python"],
        "gpu": m["cuda"],
        # Absent from manifests written before it was recorded.
        "cpu_capability": m.get("cpu_capability"),
        "load_avg_1m_at_start": load,
        "contended": bool(load > 0.5 * cores),
    }


def provenance() -> dict[str, Any]:
    """The commit this checkout is at (short) and the run manifest's machine record with this
    venv's torch and transformers: what a diagnostic's result file is stamped with."""
    import transformers

    from traitlab.core.runs import git_commit

    commit = git_commit(Path(__file__).resolve().parent)["commit"] or "unknown"
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    return {"commit": commit[:7], "machine": run_machine_info() | versions}


def machine_line(info: dict[str, Any], device: str) -> str:
    caveat = (
        f"**contended: load average {info['load_avg_1m_at_start']} on {info['cores']} cores, "
        "timings are pessimistic**"
        if info["contended"]
        else f"load average {info['load_avg_1m_at_start']} at start"
    )
    gpu = f", GPU {info['gpu']}" if info["gpu"] and device.startswith("cuda") else ""
    isa = f" ({info['cpu_capability']})" if info.get("cpu_capability") else ""
    return (
        f"{info['cpu']}{isa}, {info['cores']} cores, {info['torch_threads']} torch threads{gpu}; "
        f"torch {info['torch']}, transformers {info['transformers']}; {caveat}"
    )


def load_bench_model(kind: str, device: str, source: str | None = None) -> tuple[Any, Any, str]:
    """(model, tokenizer, description) for `kind` in auto / toy / random, or the model
    directory `source` (a saved toy base, student, or any HF causal LM directory)."""
    from traitlab.config import HFModel, ToyModel
    from traitlab.config.toy import ToyRecipe
    from traitlab.lm.base import backend
    from traitlab.lm.hf.loading import load_model
    from traitlab.toy.pretrain import build_model, is_pretrained, toy_model_dir
    from traitlab.toy.shipped import shipped_dir
    from traitlab.toy.tokenizer import build_tokenizer

    if source:
        spec = HFModel(name=source, device=device, dtype="float32")
        model, tok = load_model(spec, source=source)
        n = sum(p.numel() for p in model.parameters())
        return model, tok, f"{source} ({type(model).__name__}, {n / 1e6:.2f} M parameters)"
    recipe = ToyRecipe()
    arch = (
        f"Llama {recipe.n_layers} layers, d={recipe.hidden_size}, "
        f"{recipe.n_heads} heads, MLP {recipe.intermediate_size}"
    )
    known = shipped_dir(recipe) is not None or is_pretrained(toy_model_dir(recipe))
    if kind == "toy" or (kind == "auto" and known):
        spec = ToyModel(device=device, dtype="float32")
        model, tok = load_model(spec, source=backend("toy").resolve(spec).id)
        return model, tok, f"toy model, default recipe, pretrained ({arch})"
    tok = build_tokenizer()
    model = build_model(recipe, tok).to(device).eval()
    return model, tok, f"toy architecture with RANDOM weights ({arch}; default toy not pretrained)"


def write_results(name: str, payload: dict[str, Any], table_md: str) -> None:
    """results/<name>.json, results/<name>.md, and the table at the top of README's section."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(table_md + "\n")
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = README.read_text() if README.exists() else ""
    if begin not in text:
        text = text.rstrip() + f"\n\n## Results: {name}\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    old, tail = rest.split(end, 1)
    text = f"{head}{begin}\n\n{table_md}\n{old.strip()}\n\n{end}{tail}"
    README.write_text(re.sub(r"\n{3,}", "\n\n", text))


# ---------------------------------------------------------------------------- benchmark


def encode_prompts(tok: Any, n: int) -> list[list[int]]:
    from traitlab.config import PromptSetConfig
    from traitlab.data.prompts import number_prompts
    from traitlab.lm.hf.chat import encode_chat

    texts = number_prompts(PromptSetConfig(), n)
    return [encode_chat(tok, [{"role": "user", "content": t}], True) for t in texts]


def hf_generate(
    model: Any,
    prompts: list[list[int]],
    batch_size: int,
    max_new_tokens: int,
    stops: list[int],
    pad: int,
    seed: int,
) -> list[list[int]]:
    """`model.generate(do_sample=True)` over the same length-sorted batches as ours."""
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    torch.manual_seed(seed)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            w = max(len(prompts[i]) for i in idx)
            ids = torch.tensor([[pad] * (w - len(prompts[i])) + prompts[i] for i in idx])
            mask = torch.tensor([[0] * (w - len(prompts[i])) + [1] * len(prompts[i]) for i in idx])
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_new_tokens,
                eos_token_id=stops,
                pad_token_id=pad,
            )
            for i, row in zip(idx, gen[:, w:].tolist(), strict=True):
                cut = next((k for k, t in enumerate(row) if t in stops), len(row))
                out[i] = row[:cut]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from traitlab.config import GenerateConfig
    from traitlab.lm.hf.chat import stop_token_ids
    from traitlab.lm.hf.sampler import sample_completions

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run, < 1 min")
    ap.add_argument("--model", choices=["auto", "toy", "random"], default="auto")
    ap.add_argument("--source", default=None, help="a model directory to load instead")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    ap.add_argument("--n-prompts", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=GenerateConfig().max_new_tokens)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.batch_sizes or ([16, 64] if args.quick else [16, 64, 256])
    n_prompts = args.n_prompts or (64 if args.quick else 512)

    info = machine_info()
    model, tok, desc = load_bench_model(args.model, args.device, args.source)
    stops = stop_token_ids(model, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    prompts = encode_prompts(tok, n_prompts)
    # Warm up both paths (first-call overheads) on a few prompts.
    warm = prompts[:4]
    sample_completions(
        model, tok, warm, max_new_tokens=4, temperature=1.0,
        generator=torch.Generator(args.device).manual_seed(0), batch_size=4, stop_ids=stops,
    )  # fmt: skip
    hf_generate(model, warm, 4, 4, stops, pad, 0)

    rows = []
    for bs in sizes:
        t0 = time.perf_counter()
        ours = sample_completions(
            model, tok, prompts, max_new_tokens=args.max_new_tokens, temperature=1.0,
            generator=torch.Generator(args.device).manual_seed(0), batch_size=bs, stop_ids=stops,
        )  # fmt: skip
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = hf_generate(model, prompts, bs, args.max_new_tokens, stops, pad, 0)
        t_hf = time.perf_counter() - t0
        n_ours, n_hf = sum(map(len, ours)), sum(map(len, theirs))
        row = {
            "batch_size": bs,
            "traitlab": {"seconds": t_ours, "tokens": n_ours, "tokens_per_s": n_ours / t_ours},
            "hf_generate": {"seconds": t_hf, "tokens": n_hf, "tokens_per_s": n_hf / t_hf},
        }
        row["speedup_tokens_per_s"] = row["traitlab"]["tokens_per_s"] / max(
            row["hf_generate"]["tokens_per_s"], 1e-9
        )
        rows.append(row)
        print(
            f"batch {bs:4d}: traitlab {t_ours:7.2f} s {n_ours / t_ours:9.0f} tok/s | "
            f"generate {t_hf:7.2f} s {n_hf / t_hf:9.0f} tok/s | x{row['speedup_tokens_per_s']:.2f}",
            flush=True,
        )

    when = dt.datetime.now().isoformat(timespec="seconds")
    payload = {
        "benchmark": "generation",
        "when": when,
        "quick": args.quick,
        "machine": info,
        "device": args.device,
        "model": desc,
        "n_prompts": n_prompts,
        "max_new_tokens": args.max_new_tokens,
        "settings": "temperature 1, top-p 1, fp32, stop at end-of-turn; same length-sorted batches",
        "rows": rows,
    }
    lines = [
        f"### generation, {when}{' (--quick)' if args.quick else ''}",
        "",
        f"Machine: {machine_line(info, args.device)}. Device: {args.device}.",
        f"Model: {desc}. {n_prompts} paper-style number prompts, max_new_tokens "
        f"{args.max_new_tokens}, temperature 1.",
        "",
        "| batch | traitlab s | traitlab tok/s | generate s | generate tok/s | speed-up |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a, b = r["traitlab"], r["hf_generate"]
        lines.append(
            f"| {r['batch_size']} | {a['seconds']:.2f} | {a['tokens_per_s']:.0f} | "
            f"{b['seconds']:.2f} | {b['tokens_per_s']:.0f} | {r['speedup_tokens_per_s']:.2f}x |"
        )
    table = "\n".join(lines)
    if not args.no_write:
        write_results("generation", payload, table)
    print(table)
    return payload


if __name__ == "__main__":
    main()
