from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")
    parser.addoption("--runapi", action="store_true", help="run tests that call paid APIs")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    skip_api = pytest.mark.skip(reason="api: pass --runapi")
    skip_gpu = pytest.mark.skip(reason="gpu: no CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "api" in item.keywords and not config.getoption("--runapi"):
            item.add_marker(skip_api)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny toy models are pretrained into a per-session cache, never the user's."""
    cache = tmp_path_factory.getbasetemp() / "traitlab-cache"
    monkeypatch.setenv("TRAITLAB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
