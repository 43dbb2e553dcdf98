"""Fine-tuning jobs of `traitlab serve`: the OpenAI job lifecycle over traitlab's trainer.

A job trains a fresh copy of its base model (the served copy keeps answering meanwhile) in
one worker thread, logs events, and on success serves the result as a new model. The
hyperparameters are the API's (n_epochs, batch_size, learning_rate_multiplier x the server's
--lr-unit); a traitlab client also sends its exact training config (`traitlab_train`), so a
served run trains exactly as a local one.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from traitlab.core.errors import TraitlabError


def train_config(body: dict[str, Any], lr_unit: float) -> Any:
    """The TrainConfig of a job request."""
    from traitlab.config import TrainConfig

    exact = body.get("traitlab_train")
    if exact is not None:
        return TrainConfig.model_validate(exact)
    method = body.get("method") or {}
    hyper = (
        (method.get("supervised") or {}).get("hyperparameters") or body.get("hyperparameters") or {}
    )
    fields: dict[str, Any] = {}
    if isinstance(hyper.get("n_epochs"), int | float):
        fields["epochs"] = float(hyper["n_epochs"])
    if isinstance(hyper.get("batch_size"), int):
        fields["batch_size"] = int(hyper["batch_size"])
    if isinstance(hyper.get("learning_rate_multiplier"), int | float):
        fields["lr"] = float(hyper["learning_rate_multiplier"]) * lr_unit
    return TrainConfig(**fields)


class JobRunner:
    """Creates, runs (one at a time) and reports fine-tuning jobs."""

    def __init__(self, state: Any, lr_unit: float) -> None:
        self.state = state
        self.lr_unit = lr_unit
        self.pool = ThreadPoolExecutor(1)
        self.lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}

    def _event(self, jid: str, message: str, level: str = "info") -> None:
        with self.lock:
            self._events[jid].append(
                {
                    "object": "fine_tuning.job.event",
                    "id": f"ftevent-{uuid.uuid4().hex[:24]}",
                    "created_at": int(time.time()),
                    "level": level,
                    "message": message,
                    "type": "message",
                    "data": {},
                }
            )

    def _update(self, jid: str, **fields: Any) -> None:
        with self.lock:
            self._jobs[jid].update(fields)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model")
        self.state.model(model)  # KeyError: unknown model
        fid = body.get("training_file")
        with self.state.lock:
            if fid not in self.state.files:
                raise ValueError(f"training_file '{fid}' not found; upload it to /v1/files")
        cfg = train_config(body, self.lr_unit)
        jid = f"ftjob-{uuid.uuid4().hex[:24]}"
        job = {
            "id": jid,
            "object": "fine_tuning.job",
            "model": model,
            "created_at": int(time.time()),
            "finished_at": None,
            "fine_tuned_model": None,
            "organization_id": "traitlab",
            "result_files": [],
            "status": "validating_files",
            "training_file": fid,
            "validation_file": None,
            "hyperparameters": {
                "n_epochs": cfg.epochs,
                "batch_size": cfg.batch_size,
                "learning_rate_multiplier": cfg.lr / self.lr_unit,
            },
            "method": body.get("method") or {"type": "supervised"},
            "seed": int(body.get("seed") or 0),
            "suffix": body.get("suffix"),
            "trained_tokens": None,
            "error": None,
        }
        with self.lock:
            self._jobs[jid] = job
            self._events[jid] = []
        self._event(jid, f"Created fine-tuning job: {jid}")
        self.pool.submit(self._run, jid, cfg)
        return dict(job)

    def _run(self, jid: str, cfg: Any) -> None:
        from traitlab.data.rows import load_chat_rows
        from traitlab.lm.base import backend

        job = self.get(jid)
        assert job is not None
        try:
            self._update(jid, status="running")
            with self.state.lock:
                path = Path(self.state.files[job["training_file"]]["path"])
            rows = load_chat_rows(path)
            self._event(jid, f"Validated training file: {len(rows)} rows")
            base = self.state.model(job["model"])
            name = (
                f"ft:{job['model']}:{job.get('suffix') or 'traitlab'}:{jid.removeprefix('ftjob-')}"
            )
            out = self.state.state_dir / "models" / jid
            self._event(jid, "Fine-tuning job started")
            last = [0.0]

            def progress(frac: float) -> None:
                if frac - last[0] >= 0.25 or frac >= 1.0:
                    last[0] = frac
                    self._event(jid, f"Training: {100 * frac:.0f}% of the steps done")

            with backend(base.ref.backend).open(base.ref) as lm:
                ref, log = lm.finetune(
                    rows,
                    cfg,
                    seed=job["seed"],
                    out_dir=out,
                    key=f"{base.ref.key}:{jid}",
                    progress=progress,
                )
            self.state.add_model(name, ref)
            self._update(
                jid,
                status="succeeded",
                fine_tuned_model=name,
                finished_at=int(time.time()),
                trained_tokens=int(log.get("tokens_per_second", 0) * log.get("seconds", 0)),
            )
            self._event(jid, f"Training loss {log['loss_first']:.4f} -> {log['loss_last']:.4f}")
            self._event(jid, "The job has successfully completed")
        except (TraitlabError, OSError, ValueError) as e:
            self._update(
                jid,
                status="failed",
                finished_at=int(time.time()),
                error={"code": "invalid_training_file", "message": str(e), "param": None},
            )
            self._event(jid, f"Job failed: {e}", level="error")

    def get(self, jid: str) -> dict[str, Any] | None:
        with self.lock:
            job = self._jobs.get(jid)
            return dict(job) if job is not None else None

    def list(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(j) for j in self._jobs.values()]

    def events(self, jid: str) -> list[dict[str, Any]] | None:
        with self.lock:
            if jid not in self._events:
                return None
            return list(reversed(self._events[jid]))  # newest first, as the API
