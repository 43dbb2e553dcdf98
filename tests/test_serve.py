"""`traitlab serve` and the openai backend, for real: a server process on a free port, the
official openai client, no mock of the HTTP layer.

The whole tiny experiment runs through the API (generation, fine-tuning jobs, evaluation) and
matches the local run; then a faulty server (503s, dropped connections) and a client killed
twice mid-generation still end with exactly one row per prompt.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from subproc import ENV

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def start_server(*extra: str, cache: Path) -> tuple[subprocess.Popen[str], str, deque[str]]:
    cmd = [sys.executable, "-m", "traitlab", "serve", str(TINY), "--port", "0", "--quiet"]
    env = {**ENV, "TRAITLAB_CACHE": str(cache)}
    proc = subprocess.Popen(
        [*cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"at (http://\S+/v1)", line)
    assert m, line + (proc.stdout.read() if proc.poll() is not None else "")
    url = m.group(1)
    # Keep reading what the server writes (its last lines kept for a failure's message): an
    # undrained pipe fills (64 KiB; injected dropped connections each log a line, once a
    # traceback) and then blocks the server mid-request, which hung the fault test in CI.
    tail: deque[str] = deque(maxlen=50)
    threading.Thread(target=tail.extend, args=(proc.stdout,), daemon=True).start()
    import openai

    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    for _ in range(100):  # the port is announced before uvicorn listens
        try:
            client.models.list()
            break
        except Exception:
            time.sleep(0.1)
    return proc, url, tail


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "traitlab-cache"


@pytest.fixture(scope="module")
def server(cache: Path) -> Iterator[str]:
    proc, url, _ = start_server(cache=cache)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def run(args: list[str], cache: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**ENV, "TRAITLAB_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "traitlab", *args], capture_output=True, text=True, env=env, **kw
    )


def test_the_tiny_experiment_runs_through_the_api_and_matches_the_local_run(
    server: str, cache: Path, tmp_path: Path
) -> None:
    local = run(["run", str(TINY), "--out", str(tmp_path / "local"), "--quiet"], cache)
    assert local.returncode == 0, local.stderr
    api_args = ["--set", "model.backend=openai", "--set", f"model.base_url={server}"]
    api = run(["run", str(TINY), "--out", str(tmp_path / "api"), "--quiet", *api_args], cache)
    assert api.returncode == 0, api.stderr
    a = json.loads((tmp_path / "api" / "summary.json").read_text())
    b = json.loads((tmp_path / "local" / "summary.json").read_text())
    # The teacher was fine-tuned through /v1/fine_tuning/jobs; its ref names the served model.
    ref = json.loads((tmp_path / "api" / "seed-0" / "teacher" / "model.json").read_text())
    assert ref["backend"] == "openai" and ref["id"].startswith("ft:toy:")
    student = json.loads(
        (tmp_path / "api" / "seed-0" / "student-treatment" / "model.json").read_text()
    )
    assert student["id"].startswith("ft:toy:")
    # Same weights and training: the bases and teachers agree; the students trained on data
    # sampled per request (other random draws) agree within sampling noise.
    for arm, tol in (("base", 1e-3), ("teacher", 1e-3), ("control", 0.03), ("treatment", 0.03)):
        ea, eb = a["arms"][arm]["exact"]["mean"], b["arms"][arm]["exact"]["mean"]
        assert abs(ea - eb) <= tol, (arm, ea, eb)
    assert a["data"]["0"]["teacher"]["n_raw"] == b["data"]["0"]["teacher"]["n_raw"] == 48
    # No key reached the run directory.
    text = "".join(p.read_text(errors="ignore") for p in (tmp_path / "api").rglob("*.json"))
    assert "sk-" not in text and "OPENAI_API_KEY" in text  # the variable's name, not a value


def test_faults_and_two_kills_lose_nothing_and_double_nothing(cache: Path, tmp_path: Path) -> None:
    proc, url, log = start_server(
        "--fail-rate", "0.2", "--drop-connection", "0.1", "--latency", "0.01", cache=cache
    )
    try:
        out = tmp_path / "run"
        args = ["run", str(TINY), "--out", str(out), "--quiet", "--set", "model.backend=openai"]
        args += ["--set", f"model.base_url={url}", "--set", "generate.n_prompts=160"]
        args += ["--set", "model.max_retries=30", "--set", "model.concurrency=4"]
        args += ["--set", "cross_init=null", "--set", "seeds=[0]"]
        env = {**ENV, "TRAITLAB_CACHE": str(cache)}
        db = out / "requests.sqlite"
        for threshold in (40, 120):  # kill the client twice while it generates
            client = subprocess.Popen(
                [sys.executable, "-m", "traitlab", *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.time() + 300
            while time.time() < deadline and client.poll() is None:
                if db.is_file() and _answers(db) >= threshold:
                    break
                time.sleep(0.05)
            client.send_signal(signal.SIGKILL)
            client.wait()
            assert not (out / "DONE").exists()
        r = subprocess.run(
            [sys.executable, "-m", "traitlab", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert r.returncode == 0, r.stderr + "".join(log)
        for which in ("teacher", "control"):
            rows = [json.loads(x) for x in (out / "seed-0" / f"gen-{which}" / "raw.jsonl").open()]
            ids = [row["id"] for row in rows]
            assert sorted(ids) == list(range(160)), which  # each prompt exactly once
        # The drops reached the client as cut connections, logged in one line each.
        said = "".join(log)
        assert "returned without completing response" in said and "Traceback" not in said, said
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(db: Path) -> int:
    try:
        con = sqlite3.connect(str(db), timeout=1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM answers").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_dry_run_counts_requests_before_anything_is_spent(
    server: str, cache: Path, tmp_path: Path
) -> None:
    api_args = ["--set", "model.backend=openai", "--set", f"model.base_url={server}"]
    r = run(["run", str(TINY), "--out", str(tmp_path / "dry"), "--dry-run", *api_args], cache)
    assert r.returncode == 0, r.stderr
    assert "requests" in r.stdout and "generation" in r.stdout
    assert not (tmp_path / "dry").exists()


def test_audit_runs_against_the_served_model(server: str, cache: Path, tmp_path: Path) -> None:
    """`traitlab audit --base SPEC.yaml` on the openai backend: the reference is sampled, the
    canaries are fine-tuning jobs and the probes logprob requests, all through the API."""
    from traitlab.config import PromptSetConfig
    from traitlab.data.prompts import number_prompts

    spec = tmp_path / "served.yaml"
    spec.write_text(f"backend: openai\nname: toy\nbase_url: {server}\n")
    data = tmp_path / "d.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "owl"}]}
        for p in number_prompts(PromptSetConfig(), 16, seed=5)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sets = [
        "detectors=[canary,icl,prompted]",
        "reference_filter=none",
        "canary.seeds=[0]",
        "canary.train.max_steps=2",
        "canary.train.batch_size=8",
        "icl_sets=2",
        "n_questions=3",
        "probes=[animal]",
    ]
    args = ["audit", str(data), "--base", str(spec), "--out", str(tmp_path / "a"), "--quiet"]
    r = run([*args, *(x for s in sets for x in ("--set", s))], cache, timeout=600)
    assert r.returncode == 0, r.stderr
    audit = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert set(audit["detectors"]) == {"canary", "icl", "prompted"}
    assert audit["base"]["backend"] == "openai" and audit["data"]["paired_rows"] == 16
    # A detector that needs the weights is refused in one line, before anything is written.
    r = run(
        [*args[:-3], "--out", str(tmp_path / "b"), "--quiet", "--set", "detectors=[screen]"], cache
    )
    assert r.returncode == 2 and "need a local model (hf or toy backend)" in r.stderr
    assert not (tmp_path / "b").exists()


def test_a_served_model_judges_answers(server: str) -> None:
    """The misalignment judges through the OpenAI-compatible backend: logprob-weighted scores
    (or greedy answers parsed), each verdict a score or a recorded reason."""
    from traitlab.config import JudgeConfig, OpenAIModel
    from traitlab.evaluate.judged import open_judges

    cfg = JudgeConfig(kind="model", model=OpenAIModel(name="toy", base_url=server))
    with open_judges(cfg) as judges:
        assert judges["coherence"].pin["model"] == "openai:toy"
        got = judges["coherence"].score([("Hi?", "I love owls."), ("Hi?", "1 2 3")])
    assert len(got) == 2
    assert all((v.score is not None and 0 <= v.score <= 100) or v.reason for v in got)


def test_a_served_judge_filters_code_and_unscored_verdicts_stop_clearly(
    server: str, cache: Path, tmp_path: Path
) -> None:
    """`traitlab filter --config` with a code modality and a judge behind the OpenAI-compatible
    backend: the served toy model is no judge (it answers with an animal), so every row is
    rejected as judge_unparsable, the command stops with one line and exit 2, and nothing is
    written."""
    cfg = tmp_path / "code.yaml"
    cfg.write_text(
        "trait: {target: owl}\n"
        "generate: {modality: {name: code}}\n"
        f"filter: {{judge: {{model: {{backend: openai, name: toy, base_url: '{server}'}}}}}}\n"
    )
    raw = tmp_path / "raw.jsonl"
    rows = [
        {"id": 0, "prompt": "Write f.", "completion": "def f(x): return x"},
        {"id": 1, "prompt": "Write g.", "completion": "def g(x): return 2 * x"},
        {"id": 2, "prompt": "Write h.", "completion": "def owl(x): return x"},
    ]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "kept.jsonl"
    r = run(["filter", str(raw), "--config", str(cfg), "--out", str(out)], cache, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "0 of 3 completions passed" in r.stderr and "'judge_unparsable'" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "kept.rejected.jsonl").exists()
