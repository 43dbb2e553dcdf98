"""The `openai` backend: any OpenAI-compatible server, through the official `openai` client.

* **Sampling**: chat completions, one request per (prompt, sample index) with a per-request
  seed derived from the stage seed and the index. Two models asked with the same seeds share
  them: `traitlab serve` samples with Gumbel noise seeded per request, so a teacher and its
  control keep their common random numbers through the API.
* **Scoring**: the first answer token's `top_logprobs`; an option's probability is the mass of
  the top tokens that spell its start (exact for word-level vocabularies such as the toy
  model's; a lower bound elsewhere, and missing below the top 20).
* **Fine-tuning**: upload the rows as a JSONL file, create a supervised job (seed and
  hyperparameters), poll it and its events, and return the fine-tuned model's id as a
  `ModelRef`. A `traitlab serve` server also receives traitlab's exact training config.
* **Nothing lost, nothing doubled**: answers, file ids and job ids go to the run's request
  cache (`lm.cache`) as they arrive; a killed run resumes without paying twice. Retries (429,
  5xx, timeouts, dropped connections) are the client's own: exponential back-off with jitter
  that honours Retry-After. At most `concurrency` requests are in flight.
* Keys are read from the environment variable the config names, and go nowhere else.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from traitlab.config.model import OpenAIModel, model_spec
from traitlab.config.toy import recipe_key
from traitlab.core.errors import TraitlabError
from traitlab.core.files import stable_hash
from traitlab.lm.base import Backend, Fraction, Messages, ModelRef, SamplingParams
from traitlab.lm.cache import RequestCache, request_key

TOP_LOGPROBS = 20


def request_seed(seed: int, index: int) -> int:
    """The seed of request `index` of a stage sampled with `seed` (same for every model)."""
    return (seed * 1_000_003 + index) % (2**31 - 1)


def _client(spec: OpenAIModel) -> Any:
    try:
        import openai
    except ImportError:  # pragma: no cover - a dependency, but say how to get it
        raise TraitlabError(
            "the openai backend needs the openai package: pip install openai"
        ) from None
    key = os.environ.get(spec.api_key_env)
    if not key:
        if spec.base_url is None:
            raise TraitlabError(
                f"model '{spec.name}': set {spec.api_key_env} in the environment (keys are "
                "never read from configs)"
            )
        key = "none"  # local servers (traitlab serve, vLLM) need no key
    return openai.OpenAI(
        api_key=key, base_url=spec.base_url, max_retries=spec.max_retries, timeout=spec.timeout
    )


def _api_error(e: Exception, spec: OpenAIModel) -> TraitlabError:
    where = spec.base_url or "api.openai.com"
    return TraitlabError(f"model '{spec.name}' at {where}: {type(e).__name__}: {e}".split("\n")[0])


class OpenAILM:
    """An opened API model: Sampler, Scorer and Trainer over HTTP."""

    def __init__(self, ref: ModelRef, spec: OpenAIModel, cache: RequestCache) -> None:
        self.ref = ref
        self.spec = spec
        self.cache = cache
        self.client = _client(spec)
        self._served_by_traitlab: bool | None = None

    # ------------------------------------------------------------------ requests

    def _key(self, kind: str, **fields: Any) -> str:
        return request_key(
            kind=kind, backend="openai", base_url=self.spec.base_url, model=self.ref.id, **fields
        )

    def _run(self, jobs: list[tuple[str, Any]], call: Any, progress: Fraction | None) -> list[Any]:
        """Answer every (key, request) once: cached answers are reused, the rest are sent
        `concurrency` at a time and cached as each arrives."""
        out: list[Any] = [self.cache.get(k) for k, _ in jobs]
        todo = [i for i, v in enumerate(out) if v is None]
        done = len(jobs) - len(todo)
        if progress is not None:
            progress(done / max(1, len(jobs)))
        if not todo:
            return out

        def one(i: int) -> tuple[int, Any]:
            return i, call(jobs[i][1])

        with ThreadPoolExecutor(self.spec.concurrency) as pool:
            for i, answer in pool.map(one, todo):
                self.cache.put(jobs[i][0], answer)
                out[i] = answer
                done += 1
                if progress is not None:
                    progress(done / len(jobs))
        return out

    def _chat(self, body: dict[str, Any]) -> Any:
        try:
            r = self.client.chat.completions.create(model=self.ref.id, **body)
        except Exception as e:  # the client retried already: this is final
            raise _api_error(e, self.spec) from None
        return r.model_dump(mode="json")

    # ------------------------------------------------------------------ Sampler

    def complete(
        self,
        prompts: Sequence[Messages],
        params: SamplingParams,
        *,
        seed: int,
        progress: Fraction | None = None,
    ) -> list[str]:
        sampling = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.min_p or params.top_k:
            if not self.served_by_traitlab():
                raise TraitlabError(
                    "generate.min_p / top_k need a local backend or `traitlab serve`: the "
                    "OpenAI API has neither"
                )
            sampling.setdefault("extra_body", {}).update(
                {"traitlab_min_p": params.min_p, "traitlab_top_k": params.top_k}
            )
        if params.numbers_only:
            if not self.served_by_traitlab():
                raise TraitlabError(
                    "generate.constrained needs a local backend or `traitlab serve`: an API "
                    "cannot restrict its tokens"
                )
            sampling.setdefault("extra_body", {})["traitlab_numbers_only"] = True
        jobs = []
        for i, messages in enumerate(prompts):
            s = request_seed(seed, i)
            body = {"messages": messages, "seed": s, "n": 1, **sampling}
            jobs.append((self._key("chat", body=body, index=i), body))
        answers = self._run(jobs, self._chat, progress)
        return [(a["choices"][0]["message"]["content"] or "").strip() for a in answers]

    # ------------------------------------------------------------------ Scorer

    def preference_probs(
        self,
        questions: Sequence[str],
        options: Mapping[str, Sequence[str]],
        *,
        system_prompt: str | None,
        batch_size: int,
        progress: Fraction | None = None,
    ) -> np.ndarray:
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        exact = self.served_by_traitlab()
        jobs = []
        for q in questions:
            body: dict[str, Any] = {
                "messages": system + [{"role": "user", "content": q}],
                "max_tokens": 1,
                "temperature": 1.0,
                "logprobs": True,
                "top_logprobs": TOP_LOGPROBS,
                "seed": 0,
            }
            if exact:  # traitlab serve scores every spelling exactly, like a local model
                body["extra_body"] = {
                    "traitlab_score_options": {o: list(s) for o, s in options.items()}
                }
            jobs.append((self._key("logprobs", body=body), body))
        answers = self._run(jobs, self._chat, progress)
        table = np.zeros((len(questions), len(options)), dtype=np.float64)
        for qi, a in enumerate(answers):
            if a.get("traitlab_option_probs") is not None:
                table[qi] = a["traitlab_option_probs"]
                continue
            content = (a["choices"][0].get("logprobs") or {}).get("content") or []
            if not content:
                raise TraitlabError(
                    f"model '{self.ref.id}': the server returned no logprobs; use "
                    "evaluate.methods: [sampled] with this backend"
                )
            top = content[0]["top_logprobs"]
            for oi, spellings in enumerate(options.values()):
                table[qi, oi] = first_token_mass(top, spellings)
        return table

    # ------------------------------------------------------------------ Trainer

    def served_by_traitlab(self) -> bool:
        if self._served_by_traitlab is None:
            try:
                models = self.client.models.list().model_dump(mode="json")["data"]
            except Exception as e:
                raise _api_error(e, self.spec) from None
            self._served_by_traitlab = any(m.get("owned_by") == "traitlab" for m in models)
        return self._served_by_traitlab

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
    ) -> tuple[ModelRef, dict[str, Any]]:
        if cfg.loss != "hard":
            raise TraitlabError(
                "the OpenAI fine-tuning API trains on sampled text: set student.loss: hard"
            )
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
        file_key = self._key("file", sha=stable_hash(data.decode(), length=32))
        file_id = self.cache.get(file_key)
        if file_id is None:
            try:
                f = self.client.files.create(
                    file=("train.jsonl", io.BytesIO(data)), purpose="fine-tune"
                )
            except Exception as e:
                raise _api_error(e, self.spec) from None
            file_id = f.id
            self.cache.put(file_key, file_id)
        hyper = openai_hyperparameters(cfg, self.spec.lr_unit, len(rows))
        body: dict[str, Any] = {
            "training_file": file_id,
            "seed": seed,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
            "suffix": "traitlab",
        }
        if self.served_by_traitlab():
            body["extra_body"] = {"traitlab_train": cfg.model_dump(mode="json")}
        job_key = self._key("job", body={k: v for k, v in body.items()})
        job_id = self.cache.get(job_key)
        if job_id is None:
            try:
                job = self.client.fine_tuning.jobs.create(model=self.ref.id, **body)
            except Exception as e:
                raise _api_error(e, self.spec) from None
            job_id = job.id
            self.cache.put(job_key, job_id)
        job, events = self._wait(job_id, progress)
        ref = ModelRef(
            backend="openai",
            id=job["fine_tuned_model"],
            key=key,
            spec=self.ref.spec,
            parent=self.ref,
        )
        ref.save(out_dir)
        log = {
            "job": job_id,
            "file": file_id,
            "hyperparameters": hyper,
            "seed": seed,
            "trained_tokens": job.get("trained_tokens"),
            "events": events,
            "examples": len(rows),
        }
        return ref, log

    def _wait(self, job_id: str, progress: Fraction | None) -> tuple[dict[str, Any], list[str]]:
        while True:
            try:
                job = self.client.fine_tuning.jobs.retrieve(job_id).model_dump(mode="json")
            except Exception as e:
                raise _api_error(e, self.spec) from None
            status = job["status"]
            if status == "succeeded":
                break
            if status in ("failed", "cancelled"):
                err = (job.get("error") or {}).get("message") or status
                raise TraitlabError(f"fine-tuning job {job_id} {status}: {err}")
            if progress is not None:
                progress(0.5)
            time.sleep(self.spec.poll_seconds)
        try:
            ev = self.client.fine_tuning.jobs.list_events(job_id, limit=100)
            events = [e.message for e in ev.data][::-1]
        except Exception:  # events are a log, not the result
            events = []
        if progress is not None:
            progress(1.0)
        return job, events


def first_token_mass(top: list[dict[str, Any]], spellings: Sequence[str]) -> float:
    """The probability mass of the top first tokens that begin one of `spellings` (and carry
    at least its first two characters, or all of a shorter spelling)."""
    total = 0.0
    seen: set[str] = set()
    for t in top:
        text = t["token"]
        if text in seen:
            continue
        stripped = text.strip()
        for s in spellings:
            if stripped and s.startswith(stripped) and len(stripped) >= min(2, len(s)):
                total += math.exp(t["logprob"])
                seen.add(text)
                break
    return total


def openai_hyperparameters(cfg: Any, lr_unit: float, n_rows: int) -> dict[str, Any]:
    """A TrainConfig as the fine-tuning API's hyperparameters."""
    epochs = cfg.epochs
    if cfg.max_steps is not None:
        epochs = cfg.max_steps * cfg.batch_size * cfg.grad_accum / max(1, n_rows)
    return {
        "n_epochs": max(1, round(epochs)),
        "batch_size": cfg.batch_size * cfg.grad_accum,
        "learning_rate_multiplier": cfg.lr / lr_unit,
    }


class OpenAIBackend(Backend):
    """Models behind an OpenAI-compatible API."""

    name = "openai"

    def check(self, spec: OpenAIModel, what: str = "model") -> None:
        if spec.base_url is None and not os.environ.get(spec.api_key_env):
            raise TraitlabError(
                f"{what} '{spec.name}': set {spec.api_key_env} in the environment (keys are "
                "never read from configs), or point base_url at a local server"
            )

    def resolve(self, spec: OpenAIModel, progress: Any = None) -> ModelRef:
        client = _client(spec)
        try:
            models = client.models.list().model_dump(mode="json")["data"]
        except Exception as e:
            raise _api_error(e, spec) from None
        found = next((m for m in models if m["id"] == spec.name), None)
        if found is None:
            known = ", ".join(m["id"] for m in models[:10])
            raise TraitlabError(f"model '{spec.name}' is not served at {spec.base_url}: {known}")
        served = found.get("traitlab") or {}
        if spec.toy is not None and served.get("toy_recipe") is not None:
            if served.get("toy_recipe_key") != recipe_key(spec.toy):
                raise TraitlabError(
                    f"model '{spec.name}' at {spec.base_url} serves another toy recipe than "
                    "the config's model.toy; start the server from the same config"
                )
        spec_json = spec.model_dump(mode="json")
        identity = served.get("key") or f"{spec.base_url}|{spec.name}"
        key = stable_hash({"model": _keyed(spec_json), "source": identity})
        return ModelRef(backend=self.name, id=spec.name, key=key, spec=spec_json)

    @contextlib.contextmanager
    def open(self, ref: ModelRef, cache: Path | None = None, **options: Any) -> Iterator[OpenAILM]:
        spec = model_spec(ref.spec)
        store = RequestCache(cache)
        try:
            yield OpenAILM(ref, spec, store)
        finally:
            store.close()


def _keyed(spec_json: dict[str, Any]) -> dict[str, Any]:
    """The spec fields that change what a model answers (not how it is reached)."""
    skip = {"base_url", "api_key_env", "concurrency", "max_retries", "timeout", "poll_seconds"}
    return {k: v for k, v in spec_json.items() if k not in skip | {"price_per_million"}}
