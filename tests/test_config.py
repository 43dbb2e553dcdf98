from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from traitlab.cli.main import preset_path
from traitlab.config import (
    ExperimentConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    parse_config,
)
from traitlab.core.errors import TraitlabError

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_field_names_the_field() -> None:
    with pytest.raises(TraitlabError, match="unknown field 'student.lrr'"):
        parse_config({"student": {"lrr": 1e-4}})


def test_bad_value_names_the_field() -> None:
    with pytest.raises(TraitlabError, match="field 'student.lr'"):
        parse_config({"student": {"lr": -1}})
    with pytest.raises(TraitlabError, match="seeds must be distinct"):
        parse_config({"seeds": [1, 1]})


def test_configs_are_frozen() -> None:
    cfg = ExperimentConfig()
    with pytest.raises(ValidationError):
        cfg.name = "x"  # type: ignore[misc]


def test_yaml_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [0, 1\nname: x\n")
    with pytest.raises(TraitlabError, match="not valid YAML") as e:
        load_config(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(TraitlabError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_overrides() -> None:
    d = apply_overrides({"student": {"lr": 1}}, ["student.epochs=2", "seeds=[3,4]", "name=x"])
    assert d == {"student": {"lr": 1, "epochs": 2}, "seeds": [3, 4], "name": "x"}
    with pytest.raises(TraitlabError):
        apply_overrides({}, ["novalue"])


def test_round_trip_through_yaml() -> None:
    cfg = ExperimentConfig()
    again = parse_config(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg))))
    assert again == cfg


# MNIST configs have their own schema (tests/test_mnist*.py), sweeps and audits theirs.
EXPERIMENT_CONFIGS = sorted(
    p for p in (ROOT / "configs").rglob("*.yaml") if not {"mnist", "sweeps", "audit"} & set(p.parts)
)
SWEEP_CONFIGS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))
AUDIT_CONFIGS = sorted((ROOT / "configs" / "audit").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENT_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize("path", AUDIT_CONFIGS, ids=lambda p: p.name)
def test_shipped_audit_configs_validate(path: Path) -> None:
    from traitlab.audit import AuditConfig
    from traitlab.config.base import load_config as load_any

    assert load_any(path, AuditConfig).detectors


def test_shipped_misalignment_audit_is_the_confirmed_one() -> None:
    from traitlab.audit import AuditConfig
    from traitlab.config.base import load_config as load_any

    cfg = load_any(ROOT / "configs" / "audit" / "misalignment.yaml", AuditConfig)
    # The settings confirmed on the eighth and ninth splits (docs/audit.md); a change here
    # needs a new held-out split.
    cf = cfg.counterfactual
    assert (cf.dataset_compare, cf.dataset_margin, cfg.threshold) == ("best", 0.33, 0)
    assert cf.dataset_steps == [10, 20, 40]


def test_shipped_canary_audit_is_the_confirmed_one() -> None:
    from traitlab.audit import AuditConfig
    from traitlab.config.base import load_config as load_any

    cfg = load_any(ROOT / "configs" / "audit" / "misalignment-canary.yaml", AuditConfig)
    # Chosen on toy Llama bases 4181 / 4221 and tested on 4231 / 4232 (docs/audit.md); a
    # change here needs new held-out bases.
    c = cfg.canary
    assert (c.rows, c.seeds, c.threshold, c.null) == (None, [0], 0.023, False)
    assert (c.train.lr, c.train.epochs, c.train.batch_size) == (3e-4, 1, 64)
    assert (cfg.probes, cfg.detectors, cfg.verdict_options) == (
        ["misalignment_share"],
        ["canary"],
        ["misaligned"],
    )


@pytest.mark.parametrize("path", SWEEP_CONFIGS, ids=lambda p: p.name)
def test_shipped_sweeps_validate_every_cell(path: Path) -> None:
    from traitlab.config.base import load_config as load_any
    from traitlab.sweep import SweepConfig
    from traitlab.sweep.cells import expand

    assert expand(load_any(path, SweepConfig), path.parent)


def test_demo_preset_matches_configs_copy() -> None:
    assert preset_path("demo").read_text() == (ROOT / "configs" / "demo.yaml").read_text()
    load_config(preset_path("demo-quick"))


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs" / "paper").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_every_shipped_experiment_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name and cfg.seeds


def test_toy_prompt_shape_must_match_generation() -> None:
    short = ["model.toy.number_prompts=short", "cross_init.toy.number_prompts=short"]
    cfg = parse_config(
        apply_overrides({"cross_init": {"name": "toy"}}, [*short, "generate.prompts.style=short"])
    )
    assert cfg.generate.prompts.style == cfg.model.toy.number_prompts == "short"
    with pytest.raises(TraitlabError, match="model.toy.number_prompts is 'short' but"):
        parse_config(apply_overrides({}, short[:1]))
    with pytest.raises(TraitlabError, match="cross_init.toy.number_prompts is 'paper'"):
        parse_config(
            apply_overrides(
                {"cross_init": {"name": "toy"}}, [short[0], "generate.prompts.style=short"]
            )
        )
