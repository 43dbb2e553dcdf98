"""The README's commands work as written: the walk-through block runs line by line."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _walkthrough() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- readme-walkthrough -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README lost its walk-through block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_walkthrough_runs(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    exe = Path(sys.executable).with_name("traitlab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for line in _walkthrough():
        argv = shlex.split(line)
        assert argv[0] == "traitlab"
        r = subprocess.run(
            [str(exe), *argv[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, f"{line}\n{r.stderr[-2000:]}"
    assert (tmp_path / "out" / "student" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["exact"]["mean"] >= 0
    assert (tmp_path / "out" / "run" / "DONE").is_file()


def test_readme_quick_start_scripts_exist() -> None:
    text = (ROOT / "README.md").read_text()
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert f"bash {script}" in text and (ROOT / script).is_file()
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_readme_links_resolve_and_no_placeholders_left() -> None:
    # Results are pasted in by hand after benchmark runs: a forgotten marker or a link to a
    # result file that was never committed would ship a README that promises what is not there.
    text = (ROOT / "README.md").read_text()
    assert not re.findall(r"\{\{[A-Z_]+\}\}", text)
    for target in re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)\)", text):
        assert (ROOT / target).exists(), f"README links to missing {target}"


def test_readme_python_api_runs(tmp_path: Path, monkeypatch: object) -> None:
    """The README's Python example, as written, in a fresh directory."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- readme-python-api -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README lost its Python API block"
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)  # type: ignore[attr-defined]
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    summary = namespace["summary"]
    assert isinstance(summary, dict) and "transfer" in summary["verdict"]
    assert (tmp_path / "out" / "student" / "model.json").is_file()
    assert (tmp_path / "out" / "teacher" / "model.safetensors").is_file()
