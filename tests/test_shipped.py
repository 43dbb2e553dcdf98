"""The toy bases shipped in the package: their files match their index and recipe hash, they
pass the base checks, the demo and the tiny config find them, and a rebuild goes elsewhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from traitlab.config import HFModel, load_config
from traitlab.config.toy import ToyRecipe, recipe_key
from traitlab.toy.checks import base_checks
from traitlab.toy.pretrain import ensure_pretrained
from traitlab.toy.shipped import SHIPPED_DIR, index, shipped_dir, verify

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(index())


def test_bases_ship_for_the_demo_and_the_tiny_config() -> None:
    presets = ROOT / "src" / "traitlab" / "presets"
    for config in (
        presets / "demo.yaml",
        presets / "demo-quick.yaml",
        presets / "demo-llama.yaml",
        ROOT / "configs" / "tiny.yaml",
    ):
        cfg = load_config(config)
        for spec in (cfg.model, cfg.cross_init):
            if spec is None:  # the quick demo has no cross-init arm
                continue
            assert shipped_dir(spec.toy) is not None, f"{config}: no shipped base for {spec.toy}"
            assert ensure_pretrained(spec.toy) == shipped_dir(spec.toy)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_match_their_index_and_recipe_hash(name: str) -> None:
    assert verify(name) == []
    recipe = json.loads((SHIPPED_DIR / name / "recipe.json").read_text())
    recipe.pop("toy_version")
    assert name == f"toy-{recipe_key(ToyRecipe(**recipe))}"
    entry = index()[name]
    assert entry["machine"]["cpu"] and entry["packages"]["torch"]  # who made it, with what


def test_tampering_is_detected(tmp_path: Path) -> None:
    name = SHIPPED[0]
    shutil.copytree(SHIPPED_DIR, tmp_path / "bases")
    weights = tmp_path / "bases" / name / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert any("SHA-256" in p for p in verify(name, root=tmp_path / "bases"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bases_pass_the_base_checks(name: str) -> None:
    from traitlab.lm.hf.loading import load_model

    d = SHIPPED_DIR / name
    model, tok = load_model(HFModel(name=str(d), device="cpu"), source=str(d))
    recipe = ToyRecipe(
        **{
            k: v
            for k, v in json.loads((d / "recipe.json").read_text()).items()
            if k != "toy_version"
        }
    )
    torch.manual_seed(0)
    checks = base_checks(model, tok, n_prompts=64, seed=0, style=recipe.number_prompts)
    if recipe.pretrain_steps >= 500:  # the demo's bases (the tiny ones are barely trained)
        assert 0.01 < checks["p_owl"] < 0.2
        assert checks["p_owl_system_prompt"] > 0.8
        assert checks["format_pass"] > 0.8
    logged = json.loads((d / "pretrain_log.json").read_text())["checks"]
    assert abs(logged["p_owl"] - checks["p_owl"]) < 1e-3  # the same weights as when shipped


def test_rebuilding_pretrains_into_the_cache_instead() -> None:
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    recipe = cfg.model.toy
    rebuilt = ensure_pretrained(recipe, shipped=False)
    assert rebuilt != shipped_dir(recipe) and SHIPPED_DIR not in rebuilt.parents
    assert (rebuilt / "model.safetensors").is_file()
