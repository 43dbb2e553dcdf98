"""`traitlab serve`: an OpenAI-compatible HTTP server over a local model (FastAPI + uvicorn).

Endpoints: `GET /v1/models`; `POST /v1/chat/completions` (temperature, top_p, max_tokens, n,
seed, logprobs / top_logprobs); `POST /v1/files`, `GET /v1/files/{id}`; `POST
/v1/fine_tuning/jobs`, `GET /v1/fine_tuning/jobs[/{id}[/events]]`. Fine-tuning jobs run
traitlab's own trainer on a copy of the model, in a worker thread, and add the result as a
new served model (`ft:<base>:<suffix>:<job>`).

Sampling is seeded per request: a request's completions depend only on its seed, and they are
drawn with Gumbel noise, so two models asked with the same seed share their random numbers
(the common random numbers of a teacher and its control survive the HTTP API).

Fault injection for tests (`--fail-rate`, `--latency`, `--drop-connection`) acts before a
request reaches its handler: a failed or dropped request changed nothing, so a retry is safe.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse

from traitlab.config.toy import ToyRecipe, recipe_key
from traitlab.core.errors import TraitlabError
from traitlab.lm.base import ModelRef, SamplingParams, backend
from traitlab.serve.jobs import JobRunner


class Served:
    """One served model: its ref, loaded on first use, with a lock around the weights."""

    def __init__(self, name: str, ref: ModelRef) -> None:
        self.name = name
        self.ref = ref
        self.lock = threading.Lock()
        self.created = int(time.time())
        self._cm: Any = None
        self._lm: Any = None

    def lm(self) -> Any:
        if self._lm is None:
            self._cm = backend(self.ref.backend).open(self.ref)
            self._lm = self._cm.__enter__()
        return self._lm

    def card(self) -> dict[str, Any]:
        info: dict[str, Any] = {"backend": self.ref.backend, "key": self.ref.key}
        toy = self.ref.spec.get("toy") if self.ref.backend == "toy" else None
        if toy is not None:
            info["toy_recipe"] = toy
            info["toy_recipe_key"] = recipe_key(ToyRecipe(**toy))
        return {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "traitlab",
            "traitlab": info,
        }


class ServerState:
    """Everything the server holds: models, uploaded files, fine-tuning jobs."""

    def __init__(self, name: str, ref: ModelRef, state_dir: Path, lr_unit: float) -> None:
        self.models: dict[str, Served] = {name: Served(name, ref)}
        self.state_dir = Path(state_dir)
        (self.state_dir / "files").mkdir(parents=True, exist_ok=True)
        (self.state_dir / "models").mkdir(parents=True, exist_ok=True)
        self.files: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.jobs = JobRunner(self, lr_unit)

    def model(self, name: str) -> Served:
        with self.lock:
            if name not in self.models:
                raise KeyError(name)
            return self.models[name]

    def add_model(self, name: str, ref: ModelRef) -> None:
        with self.lock:
            self.models[name] = Served(name, ref)


# ---------------------------------------------------------------------------- chat


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def option_probs(served: Served, messages: list[dict[str, str]], options: Any) -> list[float]:
    """A traitlab extension (`traitlab_score_options`): the exact probability that the answer
    starts with each option, from the local scorer (an API's top_logprobs stop at 20)."""
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    question = messages[-1]["content"]
    with served.lock:
        table = served.lm().preference_probs(
            [question], dict(options), system_prompt=system, batch_size=64
        )
    return [float(x) for x in table[0]]


def chat_completion(served: Served, body: dict[str, Any]) -> dict[str, Any]:
    messages = [{"role": m["role"], "content": _text(m.get("content"))} for m in body["messages"]]
    n = int(body.get("n") or 1)
    seed = body.get("seed")
    seed = int(seed) if seed is not None else random.randrange(2**31)
    max_new = body.get("max_completion_tokens") or body.get("max_tokens") or 256
    params = SamplingParams(
        temperature=float(
            body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0
        ),
        top_p=float(body.get("top_p") or 1.0),
        max_new_tokens=int(max_new),
        batch_size=max(1, n),
        coupled=True,
        numbers_only=bool(body.get("traitlab_numbers_only")),
        min_p=float(body.get("traitlab_min_p") or 0.0),
        top_k=int(body.get("traitlab_top_k") or 0),
    )
    top_k = int(body.get("top_logprobs") or 0)
    want_logprobs = bool(body.get("logprobs")) or top_k > 0
    with served.lock:
        lm = served.lm()
        samples = lm.sample([messages] * n, params, seed=seed)
        choices = []
        completion_tokens = 0
        for i, (ids, stopped) in enumerate(samples):
            completion_tokens += len(ids)
            logprobs = None
            if want_logprobs:
                logprobs = {"content": lm.token_logprobs(messages, ids, stopped, top_k)}
            choices.append(
                {
                    "index": i,
                    "message": {"role": "assistant", "content": lm.decode(ids)},
                    "finish_reason": "stop" if stopped else "length",
                    "logprobs": logprobs,
                }
            )
        prompt_tokens = lm.count_prompt_tokens(messages)
    extra = {}
    if body.get("traitlab_score_options"):
        extra["traitlab_option_probs"] = option_probs(
            served, messages, body["traitlab_score_options"]
        )
    return {
        **extra,
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served.name,
        "system_fingerprint": served.ref.key,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


# ---------------------------------------------------------------------------- the app


def error(status: int, message: str, kind: str = "invalid_request_error") -> Any:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})


def create_app(state: ServerState, faults: dict[str, Any] | None = None, quiet: bool = True) -> Any:
    app = FastAPI(title="traitlab serve", version="1")
    pool = ThreadPoolExecutor(4)

    @app.get("/v1/models")
    def models() -> Any:
        with state.lock:
            data = [m.card() for m in state.models.values()]
        return {"object": "list", "data": data}

    @app.get("/v1/models/{name:path}")
    def model(name: str) -> Any:
        try:
            return state.model(name).card()
        except KeyError:
            return error(404, f"model '{name}' not found", "not_found_error")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        if not isinstance(body, dict) or "messages" not in body or "model" not in body:
            return error(400, "need 'model' and 'messages'")
        try:
            served = state.model(body["model"])
        except KeyError:
            return error(404, f"model '{body['model']}' not found", "not_found_error")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, chat_completion, served, body)
        except (TraitlabError, ValueError, KeyError, TypeError) as e:
            return error(400, str(e))

    @app.post("/v1/files")
    async def upload(file: UploadFile = File(...), purpose: str = Form(...)) -> Any:  # noqa: B008
        data = await file.read()
        fid = f"file-{uuid.uuid4().hex[:24]}"
        path = state.state_dir / "files" / f"{fid}.jsonl"
        path.write_bytes(data)
        meta = {
            "id": fid,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": file.filename or "upload.jsonl",
            "purpose": purpose,
            "status": "processed",
        }
        with state.lock:
            state.files[fid] = {**meta, "path": str(path)}
        return meta

    @app.get("/v1/files/{fid}")
    def get_file(fid: str) -> Any:
        with state.lock:
            meta = state.files.get(fid)
        if meta is None:
            return error(404, f"file '{fid}' not found", "not_found_error")
        return {k: v for k, v in meta.items() if k != "path"}

    @app.post("/v1/fine_tuning/jobs")
    async def create_job(request: Request) -> Any:
        body = await request.json()
        try:
            return state.jobs.create(body)
        except (KeyError, ValueError, TraitlabError) as e:
            return error(400, str(e))

    @app.get("/v1/fine_tuning/jobs")
    def list_jobs() -> Any:
        return {"object": "list", "data": state.jobs.list(), "has_more": False}

    @app.get("/v1/fine_tuning/jobs/{jid}")
    def get_job(jid: str) -> Any:
        job = state.jobs.get(jid)
        return job if job is not None else error(404, f"job '{jid}' not found", "not_found_error")

    @app.get("/v1/fine_tuning/jobs/{jid}/events")
    def job_events(jid: str) -> Any:
        events = state.jobs.events(jid)
        if events is None:
            return error(404, f"job '{jid}' not found", "not_found_error")
        return {"object": "list", "data": events, "has_more": False}

    if faults and any(faults.get(k) for k in ("fail_rate", "latency", "drop_connection")):
        return FaultInjector(app, **faults)
    return app


class FaultInjector:
    """ASGI middleware: delay, fail (503) or drop (a cut-off response) /v1 requests before
    their handler runs, at the configured rates, from a seeded generator."""

    def __init__(
        self,
        app: Any,
        fail_rate: float = 0.0,
        latency: float = 0.0,
        drop_connection: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.app = app
        self.fail_rate = fail_rate
        self.latency = latency
        self.drop = drop_connection
        self.rng = random.Random(seed)
        self.counts = {"failed": 0, "dropped": 0}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.latency:
            await asyncio.sleep(self.latency)
        r = self.rng.random()
        if r < self.fail_rate:
            self.counts["failed"] += 1
            body = json.dumps({"error": {"message": "injected fault", "type": "server_error"}})
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body.encode()})
            return
        if r < self.fail_rate + self.drop:
            self.counts["dropped"] += 1
            # Promise a body, send part of it and return: uvicorn closes the connection (one
            # log line, "returned without completing response"; raising here logged a whole
            # traceback per drop) and the client sees it cut.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"4096"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b'{"id": "cut', "more_body": True})
            return
        await self.app(scope, receive, send)


# ---------------------------------------------------------------------------- command line


def served_model(model: str, overrides: list[str], name: str | None) -> tuple[str, ModelRef]:
    """(served id, base ref) for `traitlab serve MODEL`: 'toy', an experiment YAML, or a
    model directory."""
    from traitlab.config import HFModel, ToyModel, load_config, model_spec

    path = Path(model)
    if model == "toy":
        spec: Any = model_spec(ToyModel().model_dump(mode="json"))
        default = "toy"
    elif path.suffix in (".yaml", ".yml"):
        spec = load_config(path, overrides).model
        default = "toy" if spec.backend == "toy" else Path(str(spec.name)).name
    else:
        spec = HFModel(name=model)
        default = path.name or model
    be = backend(spec.backend)
    be.check(spec)
    return name or default, be.resolve(spec)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve_from_args(args: Any) -> int:
    import tempfile

    import uvicorn

    from traitlab.lm.hf.loading import quiet_transformers

    quiet_transformers()
    name, ref = served_model(args.model, args.set or [], args.name)
    state_dir = Path(args.state or tempfile.mkdtemp(prefix="traitlab-serve-"))
    state = ServerState(name, ref, state_dir, args.lr_unit)
    faults = {
        "fail_rate": args.fail_rate,
        "latency": args.latency,
        "drop_connection": args.drop_connection,
        "seed": args.fault_seed,
    }
    app = create_app(state, faults)
    port = args.port or free_port(args.host)
    print(
        f"traitlab serve: {name} at http://{args.host}:{port}/v1 (state: {state_dir})", flush=True
    )
    uvicorn.run(app, host=args.host, port=port, log_level="warning" if args.quiet else "info")
    return 0
