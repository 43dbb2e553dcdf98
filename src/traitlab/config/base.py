"""Config machinery shared by every config: a frozen, validated pydantic base, YAML loading,
`a.b.c=value` overrides and one-line errors.

Each field is documented once, in its model; `traitlab config --schema` prints the
descriptions, and a resolved config round-trips into every run's manifest. Unknown fields are
errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from traitlab.core.errors import TraitlabError
from traitlab.core.files import read_text


class FrozenConfig(BaseModel):
    """The base of every config: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# Sizes no machine here can hold are refused with the limit in the message.
MAX_ROWS = 10_000_000
MAX_BATCH = 1_000_000
MAX_STEPS = 100_000_000
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


_TAGS = {"toy", "hf", "vllm", "openai", "mock"}  # ModelSpec's union members
_UNIONS = {"model", "cross_init"}  # fields that hold one


def _location(loc: tuple[Any, ...]) -> str:
    """A field's dotted path as the user wrote it (pydantic puts the union member's tag
    after a union field: model.openai.name is the user's model.name)."""
    parts = [str(p) for p in loc]
    kept = [p for i, p in enumerate(parts) if not (i and parts[i - 1] in _UNIONS and p in _TAGS)]
    return ".".join(kept) or "(top level)"


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = _location(first["loc"])
    if first["type"] == "extra_forbidden":
        return (
            f"{source}: unknown field '{loc}'; check its spelling (see `traitlab config --schema`)"
        )
    msg = first["msg"]
    if first["type"] == "union_tag_invalid":
        ctx = first.get("ctx") or {}
        known = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"{source}: field '{loc}': unknown backend '{ctx.get('tag')}'; known: {known}"
    if first["type"] == "string_pattern_mismatch":
        msg = f"{first['input']!r} is not a plain name; use letters, digits, '.', '_' and '-'"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: field '{loc}': {msg}{more}"


def parse_config(data: Any, model: type[FrozenConfig], source: str = "config") -> Any:
    """Validate a dict into a config model; errors become one-line `TraitlabError`s."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TraitlabError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise TraitlabError(_format_validation_error(e, source)) from None


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if path.is_dir():
        raise TraitlabError(f"{path}: is a directory; pass a YAML config file (see configs/)")
    if not path.exists():
        raise TraitlabError(f"{path}: config file not found; pass a YAML file (see configs/)")
    text = read_text(path, "config file")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise TraitlabError(f"{path}: not valid YAML{where}; fix the syntax") from None


def load_config(
    path: str | Path, model: type[FrozenConfig], overrides: list[str] | None = None
) -> Any:
    """Load a YAML config, apply `a.b.c=value` overrides (values parsed as YAML), validate."""
    data = load_yaml(path)
    if data is None:
        raise TraitlabError(
            f"{path}: empty config; start from a preset: traitlab config --show demo > {path}"
        )
    if not isinstance(data, dict):
        raise TraitlabError(
            f"{path}: expected a mapping of fields at the top level, got a YAML "
            f"{type(data).__name__}; see configs/ for examples"
        )
    data = apply_overrides(data, overrides or [])
    return parse_config(data, model, source=str(path))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise TraitlabError(f"override '{item}': expected key.path=value, e.g. seeds=[0,1]")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        data = set_path(data, key, value)
    return data


def set_path(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `data` with the dotted path `key` set to `value` (parents made as needed)."""
    data = dict(data)
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        child = node.get(p)
        child = dict(child) if isinstance(child, dict) else {}
        node[p] = child
        node = child
    node[parts[-1]] = value
    return data


def config_to_dict(cfg: FrozenConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def config_to_yaml(cfg: FrozenConfig) -> str:
    return str(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
