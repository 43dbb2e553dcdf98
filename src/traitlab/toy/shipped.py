"""Toy bases shipped inside the package, so that every machine runs the demo on the same
weights.

Pretraining is not bit-reproducible across CPUs (other kernels round differently), so two
machines pretraining the same recipe get two different bases, and the demo's numbers would
differ between them by more than fine-tuning rounding. The demo's two bases (the shared base
and the cross-init base) are therefore pretrained once and shipped as safetensors in
`traitlab/toy/bases/toy-<recipe key>/`, with `bases.json` recording each file's SHA-256, the
recipe and the machine and library versions that made them. `ensure_pretrained` uses a
shipped base when one matches the recipe (unless told to rebuild), and `verify` checks the
files against the index (a test runs it on every shipped base).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from traitlab.config.toy import TOY_VERSION, ToyRecipe, recipe_key

SHIPPED_DIR = Path(__file__).resolve().parent / "bases"
INDEX = "bases.json"
FILES = ("config.json", "generation_config.json", "model.safetensors", "recipe.json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def index(root: Path = SHIPPED_DIR) -> dict[str, Any]:
    """The shipped bases by directory name (empty when none ship)."""
    p = root / INDEX
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


def shipped_dir(recipe: ToyRecipe, root: Path = SHIPPED_DIR) -> Path | None:
    """The shipped base for `recipe`, or None."""

    name = f"toy-{recipe_key(recipe)}"
    d = root / name
    return d if name in index(root) and (d / "model.safetensors").is_file() else None


def verify(name: str, root: Path = SHIPPED_DIR) -> list[str]:
    """Problems with shipped base `name` (empty when its files match the index and its
    recipe.json hashes to the key in its name)."""

    entry = index(root).get(name)
    d = root / name
    if entry is None:
        return [f"{name}: not in {INDEX}"]
    problems = []
    for f, digest in entry["sha256"].items():
        if not (d / f).is_file():
            problems.append(f"{name}/{f}: missing")
        elif _sha256(d / f) != digest:
            problems.append(f"{name}/{f}: SHA-256 differs from {INDEX}")
    recipe = json.loads((d / "recipe.json").read_text())
    if recipe.pop("toy_version", None) != TOY_VERSION:
        problems.append(f"{name}: made by another toy version")
    if f"toy-{recipe_key(ToyRecipe(**recipe))}" != name:
        problems.append(f"{name}: recipe.json does not hash to the key in the name")
    return problems


def ship(model_dir: Path, root: Path = SHIPPED_DIR) -> Path:
    """Copy a pretrained base (a cache directory) into the package and index it."""
    from traitlab.core.runs import machine_info, package_versions, write_json

    model_dir = Path(model_dir)
    dest = root / model_dir.name
    dest.mkdir(parents=True, exist_ok=True)
    # Every file: the tokenizer's chat template (chat_template.jinja) is part of the model.
    names = sorted(
        p.name for p in model_dir.iterdir() if p.is_file() and not p.name.startswith(".")
    )
    missing = [f for f in FILES if f not in names]
    if missing:
        raise ValueError(f"{model_dir}: not a pretrained toy base (no {', '.join(missing)})")
    for f in names:
        shutil.copy2(model_dir / f, dest / f)
    log = json.loads((model_dir / "pretrain_log.json").read_text())
    entries = index(root)
    entries[model_dir.name] = {
        "recipe": json.loads((model_dir / "recipe.json").read_text()),
        "sha256": {f: _sha256(dest / f) for f in sorted(names)},
        "checks": log.get("checks"),
        "pretrain_seconds": log.get("seconds"),
        "torch_threads": log.get("torch_threads"),
        "machine": machine_info(),
        "packages": package_versions(),
        "shipped": time.strftime("%Y-%m-%d"),
    }
    write_json(root / INDEX, dict(sorted(entries.items())))
    return dest


def weights_digest(model_dir: Path) -> str:
    """A short content hash of a model directory's weights (stage keys depend on what a base
    *is*: a shipped base and one pretrained here from the same recipe differ)."""
    h = hashlib.sha256()
    for p in sorted(Path(model_dir).glob("*.safetensors")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]
