"""The `hf` backend: any causal LM that transformers loads, run in this process.

`HFLM` is an opened model (a torch model and its tokenizer) that implements all three
protocols: `complete` (the batched KV-cache sampler, with shared Gumbel noise when asked),
`preference_probs` (exact, by teacher forcing) and `finetune` (traitlab's training loop,
saved as safetensors). Opening loads the weights; leaving the `with` block frees them.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from traitlab.config.model import HFModel, model_spec
from traitlab.core.files import stable_hash
from traitlab.core.progress import batch_progress
from traitlab.lm.base import Backend, Fraction, Messages, ModelRef, SamplingParams
from traitlab.lm.hf.chat import (
    decode,
    encode_chat,
    encode_chats,
    model_device,
    numeric_token_ids,
    stop_token_ids,
)
from traitlab.lm.hf.loading import check_model, load_model, load_tokenizer, model_source, save_model
from traitlab.lm.hf.sampler import sample_completions
from traitlab.lm.hf.scoring import exact_preference


class HFLM:
    """An opened Hugging Face model: Sampler, Scorer and Trainer."""

    def __init__(self, ref: ModelRef, model: Any, tokenizer: Any) -> None:
        self.ref = ref
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def wrap(cls, model: Any, tokenizer: Any, ref: ModelRef | None = None) -> HFLM:
        """An opened model around objects already in memory (notebooks, tests)."""
        if ref is None:
            ref = ModelRef(backend="hf", id="<memory>", key="memory", spec={})
        return cls(ref, model, tokenizer)

    def complete(
        self,
        prompts: Sequence[Messages],
        params: SamplingParams,
        *,
        seed: int,
        progress: Fraction | None = None,
    ) -> list[str]:
        outs = self._sample_ids(prompts, params, seed, progress)
        return [decode(self.tokenizer, ids) for ids in outs]

    def _sample_ids(
        self,
        prompts: Sequence[Messages],
        params: SamplingParams,
        seed: int,
        progress: Fraction | None,
    ) -> list[list[int]]:
        tok, model = self.tokenizer, self.model
        encoded = encode_chats(tok, prompts, add_generation_prompt=True)
        stops = stop_token_ids(model, tok)
        allowed = numeric_token_ids(tok) + stops if params.numbers_only else None
        # Shared Gumbel noise is V floats per row and token: draw it where the model runs
        # rather than on the CPU and copy it over (the uniform-per-token sampler draws on CPU).
        device = model_device(model) if params.coupled else torch.device("cpu")
        gen = torch.Generator(device=device).manual_seed(seed)
        return sample_completions(
            model,
            tok,
            encoded,
            max_new_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            min_p=params.min_p,
            top_k=params.top_k,
            generator=gen,
            batch_size=params.batch_size,
            stop_ids=stops,
            allowed_ids=allowed,
            on_batch=batch_progress(len(encoded), progress),
            coupled=params.coupled,
        )

    def sample(
        self, prompts: Sequence[Messages], params: SamplingParams, *, seed: int
    ) -> list[tuple[list[int], bool]]:
        """Token ids of one completion per prompt, and whether it ended on a stop token (a
        serving path: `complete` is the same draw, decoded)."""
        ids = self._sample_ids(prompts, params, seed, None)
        return [(c, len(c) < params.max_new_tokens) for c in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return decode(self.tokenizer, ids)

    def count_prompt_tokens(self, messages: Messages) -> int:
        return len(encode_chat(self.tokenizer, messages, add_generation_prompt=True))

    def completion_logprobs(
        self, rows: Sequence[Mapping[str, Any]], *, batch_size: int
    ) -> list[np.ndarray]:
        from traitlab.lm.hf.rowscore import token_logprobs

        scored = token_logprobs(
            self.model, self.tokenizer, [dict(r) for r in rows], batch_size=batch_size
        )
        return [lp for _, lp in scored]

    @torch.inference_mode()
    def token_logprobs(
        self, messages: Messages, ids: Sequence[int], stopped: bool, top_k: int
    ) -> list[dict[str, Any]]:
        """OpenAI-style logprobs of a completion's tokens (and its stop token), with the
        `top_k` most likely tokens at each position, by one teacher-forced pass."""
        tok, model = self.tokenizer, self.model
        prompt = encode_chat(tok, messages, add_generation_prompt=True)
        tail = list(ids) + ([stop_token_ids(model, tok)[0]] if stopped else [])
        if not tail:
            return []
        seq = torch.tensor([prompt + tail], device=model_device(model))
        logits = model(input_ids=seq, use_cache=False).logits[0].float()
        logp = torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(tail)], dim=-1)

        def entry(i: int, lp: float) -> dict[str, Any]:
            text = tok.decode([i], skip_special_tokens=False)
            return {"token": text, "logprob": lp, "bytes": list(text.encode())}

        out = []
        for t, i in enumerate(tail):
            e = entry(i, float(logp[t, i]))
            if top_k:
                vals, idx = logp[t].topk(min(top_k, logp.shape[-1]))
                e["top_logprobs"] = [
                    entry(int(j), float(v))
                    for v, j in zip(vals.tolist(), idx.tolist(), strict=True)
                ]
            else:
                e["top_logprobs"] = []
            out.append(e)
        return out

    def preference_probs(
        self,
        questions: Sequence[str],
        options: Mapping[str, Sequence[str]],
        *,
        system_prompt: str | None,
        batch_size: int,
        progress: Fraction | None = None,
    ) -> np.ndarray:
        return exact_preference(
            self.model,
            self.tokenizer,
            questions,
            list(options),
            batch_size=batch_size,
            system_prompt=system_prompt,
            spellings=options,
            progress=progress,
        )

    def answer_probs(
        self, questions: Sequence[str], answers: Sequence[str], *, batch_size: int
    ) -> np.ndarray:
        from traitlab.lm.hf.answers import whole_answer_probs

        # One packed pass per question: `batch_size` is the protocol's, unused here.
        return whole_answer_probs(
            self.model,
            self.tokenizer,
            questions,
            answers,
            stop_ids=stop_token_ids(self.model, self.tokenizer),
        )

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the trainable weights (early stopping keeps the last good ones)."""
        return {
            n: p.detach().to("cpu", copy=True)
            for n, p in self.model.named_parameters()
            if p.requires_grad
        }

    def load_trainable_state(self, state: Mapping[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, v in state.items():
                params[n].copy_(v)

    def finetune(
        self,
        rows: list[dict[str, Any]],
        cfg: Any,
        *,
        seed: int,
        out_dir: Path,
        key: str,
        teacher: ModelRef | None = None,
        progress: Fraction | None = None,
        on_step: Callable[[int, Any], bool] | None = None,
    ) -> tuple[ModelRef, dict[str, Any]]:
        """Train this model in place on `rows` and save it into `out_dir` (safetensors +
        model.json). A soft-label loss reads `teacher`'s logits. `on_step(step, lm)` runs
        after every optimiser step with the model in training opened as `lm` (it can sample
        from it); returning False stops training there."""
        from traitlab.lm.hf.trainer import train_model

        soft = None
        if cfg.loss == "soft":
            if teacher is None:
                from traitlab.core.errors import TraitlabError

                raise TraitlabError(
                    "train.loss 'soft' needs the teacher model (logit distillation)"
                )
            soft, _ = HFBackend().load(teacher)
        step_hook = None
        if on_step is not None:  # the hook sees the model in training as an opened model

            def step_hook(step: int, model: Any) -> bool:
                return on_step(step, HFLM(self.ref, model, self.tokenizer))

        model, log = train_model(
            self.model,
            self.tokenizer,
            rows,
            cfg,
            seed=seed,
            teacher=soft,
            progress=progress,
            on_step=step_hook,
        )
        del soft
        return self._keep(model, out_dir, key), log

    def _keep(self, model: Any, out_dir: Path, key: str) -> ModelRef:
        """After training: `model` becomes this one, saved into `out_dir` with its ref (a
        child of this model's)."""
        self.model = model
        save_model(model, self.tokenizer, out_dir)
        ref = ModelRef(
            backend=self.ref.backend, id=str(out_dir), key=key, spec=self.ref.spec, parent=self.ref
        )
        ref.local().save(out_dir)
        return ref

    def finetune_dpo(
        self,
        pairs: list[dict[str, Any]],
        cfg: Any,
        *,
        beta: float,
        seed: int,
        out_dir: Path,
        key: str,
        progress: Fraction | None = None,
    ) -> tuple[ModelRef, dict[str, Any]]:
        """DPO on preference pairs {"prompt", "chosen", "rejected"} from this model (also
        the reference); saved like `finetune`."""
        from traitlab.lm.hf.dpo import dpo_train

        model, log = dpo_train(
            self.model, self.tokenizer, pairs, cfg, beta=beta, seed=seed, progress=progress
        )
        return self._keep(model, out_dir, key), log


def free(*_: Any) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class HFBackend(Backend):
    """Hugging Face models in this process."""

    name = "hf"
    trains_in_process = True

    def check(self, spec: HFModel, what: str = "model") -> None:
        check_model(spec, what)

    def resolve(self, spec: HFModel, progress: Any = None) -> ModelRef:
        source = model_source(spec)
        spec_json = spec.model_dump(mode="json")
        # Key on what the model is (its config and source), never where a cache lies.
        key = stable_hash({"model": spec_json, "source": source})
        return ModelRef(backend=self.name, id=source, key=key, spec=spec_json)

    def can_spell(self, spec: Any, ref: ModelRef | None, text: str) -> bool:
        """Whether the tokenizer writes `text` without unknown tokens."""
        tok = load_tokenizer(ref.id if ref else model_source(spec), None if ref else spec)
        return _spells(tok, text)

    def load(self, ref: ModelRef) -> tuple[Any, Any]:
        """(model, tokenizer) of a ref: the base `spec` names, a saved directory, or a LoRA
        adapter directory (loaded onto the model it was trained from, then merged)."""
        spec = model_spec(ref.spec)
        if ref.parent is not None and (Path(ref.id) / "adapter_config.json").is_file():
            from peft import PeftModel

            model, tok = self.load(ref.parent)
            return PeftModel.from_pretrained(model, ref.id).merge_and_unload(), tok
        is_base = isinstance(spec, HFModel) and ref.id == model_source(spec)
        return load_model(spec, source=None if is_base else ref.id)

    @contextlib.contextmanager
    def open(self, ref: ModelRef, **options: Any) -> Iterator[HFLM]:
        model, tok = self.load(ref)
        lm = HFLM(ref, model, tok)
        try:
            yield lm
        finally:
            lm.model = None
            del model
            free()


def _spells(tokenizer: Any, text: str) -> bool:
    from traitlab.lm.hf.scoring import answer_token_sequences

    return bool(answer_token_sequences(tokenizer, "", [], text, [text]))
