"""The `toy` backend: the embedded toy model, a provider of Hugging Face model directories.

Resolving a toy spec finds its base (shipped in the package, cached, or pretrained now); from
there on it is an ordinary HF directory, opened and trained by the `hf` backend's code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traitlab.config.model import ToyModel, model_spec
from traitlab.core.device import resolve_device
from traitlab.core.files import stable_hash
from traitlab.lm.base import ModelRef
from traitlab.lm.hf.backend import HFBackend, _spells
from traitlab.lm.hf.loading import load_model, quiet_transformers


def identity(source: Path) -> str:
    """What a toy base *is*: its recipe key and a hash of its weights (a shipped base and one
    pretrained here from the same recipe differ), never where it lies."""
    from traitlab.toy.shipped import weights_digest

    return f"{Path(source).name}:{weights_digest(Path(source))}"


class ToyBackend(HFBackend):
    """The embedded toy model."""

    name = "toy"

    def check(self, spec: ToyModel, what: str = "model") -> None:
        resolve_device(spec.device)

    def resolve(self, spec: ToyModel, progress: Any = None) -> ModelRef:
        from traitlab.toy.pretrain import ensure_pretrained

        quiet_transformers()
        source = ensure_pretrained(spec.toy, progress=progress, shipped=spec.shipped)
        spec_json = spec.model_dump(mode="json")
        key = stable_hash({"model": spec_json, "source": identity(source)})
        return ModelRef(backend=self.name, id=str(source), key=key, spec=spec_json)

    def can_spell(self, spec: Any, ref: ModelRef | None, text: str) -> bool:
        from traitlab.config.toy import has_tasks
        from traitlab.toy.tokenizer import build_tokenizer

        tok = build_tokenizer(
            spec.toy.max_len, personas=spec.toy.persona_frac > 0, tasks=has_tasks(spec.toy)
        )
        return _spells(tok, text)

    def load(self, ref: ModelRef) -> tuple[Any, Any]:
        if ref.parent is not None and (Path(ref.id) / "adapter_config.json").is_file():
            return super().load(ref)
        return load_model(model_spec(ref.spec), source=ref.id)  # every toy model is a dir
