"""The `vllm` backend: vLLM's offline engine for sampling and scoring (`pip install
traitlab[vllm]`, a CUDA GPU).

* One engine per base model and process, with LoRA enabled: a fine-tuned model whose stage
  directory holds a LoRA adapter (`student.lora.merge: false`) is sampled as that adapter,
  per request (`LoRARequest`), without reloading the base; a merged or fully fine-tuned
  directory gets an engine of its own.
* Seed policy: request i of a stage sampled with seed s gets its own seed (`request_seed(s,
  i)`), never one seed for every request (the single-seed datasets of some replications are
  one repeated random stream).
* Scoring sums the prompt log-probabilities of each option's token sequences (the same
  prefix-free sequences as the hf scorer).
* Fine-tuning runs through the hf trainer (torch, on the same GPU, after the engine is freed).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.config.model import HFModel, VLLMModel, model_spec
from traitlab.core.errors import TraitlabError
from traitlab.core.files import stable_hash
from traitlab.lm.base import Backend, Fraction, Messages, ModelRef, SamplingParams
from traitlab.lm.openai import request_seed

_ENGINES: dict[str, Any] = {}


def _vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise TraitlabError(
            "the vllm backend needs vLLM and a CUDA GPU: pip install traitlab[vllm]"
        ) from None
    return vllm


def _engine(spec: VLLMModel, model_path: str) -> Any:
    key = f"{model_path}|{spec.dtype}|{spec.tensor_parallel_size}"
    if key not in _ENGINES:
        vllm = _vllm()
        _ENGINES[key] = vllm.LLM(
            model=model_path,
            revision=spec.revision if model_path == spec.name else None,
            dtype="auto" if spec.dtype == "auto" else spec.dtype,
            tensor_parallel_size=spec.tensor_parallel_size,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            max_model_len=spec.max_model_len,
            enable_lora=True,
            max_lora_rank=spec.max_lora_rank,
            trust_remote_code=spec.trust_remote_code,
            seed=0,
        )
    return _ENGINES[key]


def release_engines() -> None:
    _ENGINES.clear()
    gc.collect()
    try:
        import torch

        torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


class VLLMLM:
    """An opened model on a vLLM engine: Sampler and Scorer (and Trainer through hf)."""

    def __init__(self, ref: ModelRef, spec: VLLMModel) -> None:
        self.ref = ref
        self.spec = spec
        path = Path(ref.id)
        self.adapter = path if (path / "adapter_config.json").is_file() else None
        base = spec.name if self.adapter is not None or ref.parent is None else ref.id
        self.llm = _engine(spec, base)
        self.tokenizer = self.llm.get_tokenizer()

    def _lora(self) -> Any:
        if self.adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(
            self.adapter.name, abs(hash(str(self.adapter))) % 2**31, str(self.adapter)
        )

    def _texts(self, prompts: Sequence[Messages]) -> list[str]:
        return [
            self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
            for m in prompts
        ]

    def complete(
        self,
        prompts: Sequence[Messages],
        params: SamplingParams,
        *,
        seed: int,
        progress: Fraction | None = None,
    ) -> list[str]:
        vllm = _vllm()
        sps = [
            vllm.SamplingParams(
                temperature=params.temperature,
                top_p=params.top_p,
                min_p=params.min_p,
                top_k=params.top_k or -1,
                max_tokens=params.max_new_tokens,
                seed=request_seed(seed, i),
            )
            for i in range(len(prompts))
        ]
        outs = self.llm.generate(self._texts(prompts), sps, lora_request=self._lora())
        if progress is not None:
            progress(1.0)
        return [o.outputs[0].text.strip() for o in outs]

    def preference_probs(
        self,
        questions: Sequence[str],
        options: Mapping[str, Sequence[str]],
        *,
        system_prompt: str | None,
        batch_size: int,
        progress: Fraction | None = None,
    ) -> np.ndarray:
        from traitlab.lm.hf.scoring import answer_token_sequences

        vllm = _vllm()
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        texts = self._texts([system + [{"role": "user", "content": q}] for q in questions])
        requests, owner = [], []
        for qi, text in enumerate(texts):
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            for oi, (o, spell) in enumerate(options.items()):
                for seq in answer_token_sequences(self.tokenizer, text, ids, o, list(spell)):
                    requests.append({"prompt_token_ids": list(ids) + list(seq)})
                    owner.append((qi, oi, len(ids), seq))
        sp = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        outs = self.llm.generate(requests, sp, lora_request=self._lora())
        table = np.zeros((len(questions), len(options)), dtype=np.float64)
        for (qi, oi, n, seq), out in zip(owner, outs, strict=True):
            lps = out.prompt_logprobs[n:]
            table[qi, oi] += float(
                np.exp(sum(lp[t].logprob for lp, t in zip(lps, seq, strict=True)))
            )
        if progress is not None:
            progress(1.0)
        return table

    def finetune(
        self, rows: list[dict[str, Any]], cfg: Any, **kw: Any
    ) -> tuple[ModelRef, dict[str, Any]]:
        from traitlab.lm.hf.backend import HFBackend

        release_engines()  # the GPU's memory goes to training
        hf_spec = HFModel(
            name=self.spec.name, revision=self.spec.revision, dtype=self.spec.dtype, device="cuda"
        )
        hf_ref = ModelRef(
            backend="hf",
            id=self.ref.id,
            key=self.ref.key,
            spec=hf_spec.model_dump(mode="json"),
            parent=self.ref.parent,
        )
        with HFBackend().open(hf_ref) as lm:
            ref, log = lm.finetune(rows, cfg, **kw)
        ref = ref.model_copy(update={"backend": "vllm", "spec": self.ref.spec, "parent": self.ref})
        ref.local().save(kw["out_dir"])
        return ref, log


class VLLMBackend(Backend):
    name = "vllm"
    trains_in_process = True

    def check(self, spec: VLLMModel, what: str = "model") -> None:
        try:
            import torch
        except ImportError:  # pragma: no cover
            raise TraitlabError(f"{what}: the vllm backend needs torch") from None
        if not torch.cuda.is_available():
            raise TraitlabError(f"{what} '{spec.name}': the vllm backend needs a CUDA GPU")
        _vllm()

    def resolve(self, spec: VLLMModel, progress: Any = None) -> ModelRef:
        spec_json = spec.model_dump(mode="json")
        return ModelRef(
            backend=self.name,
            id=spec.name,
            key=stable_hash({"model": spec_json, "source": spec.name}),
            spec=spec_json,
        )

    @contextlib.contextmanager
    def open(self, ref: ModelRef, **options: Any) -> Iterator[VLLMLM]:
        yield VLLMLM(ref, model_spec(ref.spec))
