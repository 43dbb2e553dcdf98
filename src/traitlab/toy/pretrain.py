"""Pretraining the embedded toy chat model into an ordinary Hugging Face model directory.

`ensure_pretrained(recipe)` returns `cache_dir()/models/toy-<hash>`, pretraining it first if
it is absent. The directory holds safetensors weights, config.json, generation_config.json,
the tokenizer (with its chat template), `recipe.json` and `pretrain_log.json` (loss curve,
wall and CPU seconds, tokens/s, `base_checks`), so it loads with
`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` like any hub model.

The model is a small `LlamaForCausalLM` (tied embeddings) initialised after
`torch.manual_seed(recipe.seed)` and trained on `pretrain_steps x batch_size` fresh examples of
the toy world, each seen once, with AdamW, linear warmup and a cosine decay to 0.1x.

* **Packing.** Examples are packed into rows of `pack_len` tokens with position ids that
  restart per example, so transformers applies a block-diagonal causal mask: no padding
  compute (examples are 12-127 tokens long), yet every batch mixes all kinds of example.
  (Length-bucketed batches are as fast but single-kind; with them and answer-only loss the
  base answered "owl" under the owl system prompt only 18 % of the time after 1000 steps.)
* **Loss.** The assistant's tokens (and `<end>`) weigh 1, the system prompt's tokens
  `system_loss_weight` (0.25), the user prompt's 0. Predicting the repeated option in
  "You love owls. You think about owls..." builds the copy mechanism that answers "owl" under
  that prompt ~2x sooner than answer-only loss; loss on the whole chat learns it as fast but
  lets words leak into number answers (more format-filter failures).
* **Determinism.** Same recipe + same machine + same torch thread count -> same weights
  (data order from `numpy.random.default_rng(recipe.seed)`, no dropout). Another CPU may
  round apart; `pretrain_log.json` records the machine, with torch's CPU capability (AVX2, AVX512, ...).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from traitlab.config.toy import TOY_VERSION, ToyRecipe, has_tasks, recipe_key
from traitlab.core.runs import machine_info, write_json
from traitlab.toy.batches import collate, encode_corpus, make_batches
from traitlab.toy.tokenizer import SYS, USER, build_tokenizer
from traitlab.toy.world import corpus_stats, generate_corpus

Progress = Callable[[str, float], None]


# ---------------------------------------------------------------------------- cache


def toy_model_dir(recipe: ToyRecipe, cache: Path | None = None) -> Path:
    """Where the base for `recipe` lives (whether or not it exists yet)."""
    if cache is None:
        from traitlab.core.device import cache_dir

        cache = cache_dir()
    return Path(cache) / "models" / f"toy-{recipe_key(recipe)}"


def is_pretrained(path: Path) -> bool:
    return (Path(path) / "config.json").is_file() and (Path(path) / "pretrain_log.json").is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_pretrained(
    recipe: ToyRecipe,
    cache: Path | None = None,
    progress: Progress | None = None,
    shipped: bool = True,
) -> Path:
    """The directory of the pretrained toy base for `recipe`: the one shipped in the package
    when it matches (and `shipped`), else the cache's, pretraining it if needed.

    Safe to call from several processes at once: a lock file makes one of them pretrain while
    the others wait, then all return the same directory. The model is written to a temporary
    directory and renamed into place only when complete.
    """
    if shipped:
        from traitlab.toy.shipped import shipped_dir

        found = shipped_dir(recipe)
        if found is not None:
            return found
    final = toy_model_dir(recipe, cache)
    if is_pretrained(final):
        return final
    with _file_lock(final.with_name(f".{final.name}.lock")):
        if is_pretrained(final):  # another process finished it while we waited
            return final
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a killed process
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
        try:
            pretrain(recipe, tmp, progress)
            for f in tmp.iterdir():  # mkdtemp/mkstemp make private files; a model dir is not
                f.chmod(0o644)
            tmp.chmod(0o755)
            if final.exists():  # an incomplete leftover (no pretrain_log.json)
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


# ---------------------------------------------------------------------------- model


def model_config(recipe: ToyRecipe, tokenizer: Any) -> Any:
    from transformers import GPT2Config, LlamaConfig

    if recipe.arch == "gpt2":
        return GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=recipe.max_len,
            n_embd=recipe.hidden_size,
            n_layer=recipe.n_layers,
            n_head=recipe.n_heads,
            n_inner=recipe.intermediate_size,
            activation_function="gelu_new",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            layer_norm_epsilon=1e-5,
            tie_word_embeddings=recipe.tie_embeddings,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
        )
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.n_layers,
        num_attention_heads=recipe.n_heads,
        num_key_value_heads=recipe.n_heads,
        max_position_embeddings=recipe.max_len,
        tie_word_embeddings=recipe.tie_embeddings,
        mlp_bias=recipe.mlp_bias,
        attention_bias=recipe.attention_bias,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        rms_norm_eps=1e-5,
        attention_dropout=0.0,
    )


def build_model(recipe: ToyRecipe, tokenizer: Any) -> Any:
    """A freshly initialised toy model: `torch.manual_seed(recipe.seed)` then the Llama init."""
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    cfg = model_config(recipe, tokenizer)
    cls = GPT2LMHeadModel if recipe.arch == "gpt2" else LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(recipe.seed)
        model = cls(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


def lr_lambda(recipe: ToyRecipe) -> Callable[[int], float]:
    """Linear warmup to 1, then cosine from 1 to 0.1 at the last step."""

    def f(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        span = max(1, recipe.pretrain_steps - recipe.warmup_steps)
        t = min(1.0, (step - recipe.warmup_steps) / span)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    return f


# ---------------------------------------------------------------------------- training


def pretrain(
    recipe: ToyRecipe,
    out_dir: Path,
    progress: Progress | None = None,
    on_log: Callable[[int, Any, Any], None] | None = None,
) -> dict[str, Any]:
    """Pretrain a base for `recipe` and save it (weights, tokenizer, recipe, log) to `out_dir`.

    `on_log(step, model, tokenizer)` (diagnostics) is called at every loss-log point.
    """
    t0 = time.time()
    say = progress or (lambda desc, frac: None)
    say("building the toy corpus", 0.0)
    tok = build_tokenizer(
        model_max_length=recipe.max_len,
        personas=recipe.persona_frac > 0,
        tasks=has_tasks(recipe),
    )
    n = recipe.pretrain_steps * recipe.batch_size
    corpus = generate_corpus(recipe, n)
    ids, n_prompt = encode_corpus(tok, corpus)
    ids = [r[: recipe.max_len] for r in ids]
    lengths = np.array([len(r) for r in ids])
    t_data = time.time() - t0

    model = build_model(recipe, tok)
    model.train()
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for name, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=recipe.lr,
        betas=(0.9, 0.95),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(recipe))
    sys_id, user_id = tok.convert_tokens_to_ids([SYS, USER])
    loss_weights = (recipe.system_loss_weight, recipe.user_loss_weight)
    rng = np.random.default_rng(recipe.seed)
    batches = make_batches(lengths, recipe, rng)

    losses: list[list[float]] = []
    window: list[float] = []
    tokens = 0
    t_train, cpu_train = time.time(), time.process_time()
    every = max(1, len(batches) // 100)
    for step, rows in enumerate(batches):
        x, position, pos, targets, weight = collate(
            ids, n_prompt, rows, tok.pad_token_id, loss_weights, sys_id, user_id
        )
        inner = model.base_model  # .model (Llama) or .transformer (GPT-2)
        hidden = inner(input_ids=x, position_ids=position, use_cache=False).last_hidden_state
        logits = model.lm_head(hidden.reshape(-1, hidden.shape[-1])[pos])
        ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        loss = (ce * weight).sum() / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        tokens += sum(int(lengths[i]) for row in rows for i in row)
        window.append(loss.item())
        if (step + 1) % every == 0 or step + 1 == len(batches):
            losses.append([step + 1, round(sum(window) / len(window), 5)])
            window = []
            say("pretraining the toy model", (step + 1) / len(batches))
            if on_log is not None:
                on_log(step + 1, model, tok)
                model.train()
    train_s, train_cpu = time.time() - t_train, time.process_time() - cpu_train

    say("checking the toy model", 1.0)
    t_check = time.time()
    from traitlab.toy.checks import base_checks

    checks = base_checks(model, tok, recipe.check_prompts, recipe.seed, recipe.number_prompts)
    checks["seconds"] = round(time.time() - t_check, 2)
    model.eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    write_json(
        out_dir / "recipe.json", {"toy_version": TOY_VERSION, **recipe.model_dump(mode="json")}
    )
    log = {
        "toy_version": TOY_VERSION,
        "recipe_key": recipe_key(recipe),
        "loss": losses,
        "final_loss": losses[-1][1] if losses else None,
        "steps": len(batches),
        "examples": n,
        "corpus": corpus_stats(corpus),
        "tokens": tokens,
        "params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tok),
        "data_seconds": round(t_data, 2),
        "train_seconds": round(train_s, 2),
        "train_cpu_seconds": round(train_cpu, 2),  # less sensitive to other load than wall time
        "seconds": round(time.time() - t0, 2),
        "tokens_per_s": round(tokens / max(train_s, 1e-9)),
        "checks": checks,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        # The run manifests' machine record: the CPU and the kernels that did the arithmetic
        # (see "Determinism" above).
        "machine": machine_info(),
    }
    write_json(out_dir / "pretrain_log.json", log)
    say("pretraining the toy model", 1.0)
    return log
