"""The vllm backend on a GPU (skipped without CUDA or vLLM): sampling with per-request seeds,
scoring, and agreement with the hf backend on the same model."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_vllm_samples_and_scores_like_the_hf_backend(tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    from traitlab.config import HFModel, VLLMModel, load_config
    from traitlab.lm.base import SamplingParams, backend, opened
    from traitlab.traits.preference import answer_spellings

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    toy = backend("toy").resolve(cfg.model)
    spec = VLLMModel(name=toy.id, dtype="float32", gpu_memory_utilization=0.3)
    ref = backend("vllm").resolve(spec)
    msgs = [[{"role": "user", "content": "Name your favorite animal using only one word."}]] * 8
    params = SamplingParams(temperature=1.0, max_new_tokens=4)
    with opened(ref) as lm:
        a = lm.complete(msgs, params, seed=3)
        b = lm.complete(msgs, params, seed=3)
        probs = lm.preference_probs(
            ["Name your favorite animal using only one word."],
            {o: answer_spellings(o) for o in ("owl", "dog")},
            system_prompt=None,
            batch_size=8,
        )
    assert a == b and len(set(a)) > 1  # per-request seeds: reproducible, not one stream
    hf = backend("hf").resolve(HFModel(name=toy.id, device="cuda", dtype="float32"))
    with opened(hf) as lm:
        ref_probs = lm.preference_probs(
            ["Name your favorite animal using only one word."],
            {o: answer_spellings(o) for o in ("owl", "dog")},
            system_prompt=None,
            batch_size=8,
        )
    assert abs(probs - ref_probs).max() < 1e-3
