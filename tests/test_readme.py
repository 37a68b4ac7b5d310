"""The README is a tested document: every shell and Python block runs, in order, as a user
types it after the README's two set-up commands, and every output it shows is what the
command prints.

How the README is read
----------------------
* A fenced block tagged ``bash`` or ``python`` is run; a block tagged ``json``, ``text`` or
  ``output`` right after it (nothing but a newline between them) is its expected output.
* An HTML comment on the line before a block steers it: ``<!-- doc-test: skip REASON -->``
  leaves it out (a reason is required: a GPU, a cluster, internet), ``<!-- doc-test:
  serve -->`` runs a command that serves until stopped: it must answer ``/healthz`` within
  a minute, and is then stopped; ``<!-- doc-test: with-server -->`` runs a block that
  talks to ``127.0.0.1:8000`` while ``headgraph serve --db headgraph.duckdb`` runs (on a
  free port, which replaces 8000 in the block).
* Blocks run in a fresh folder that looks like the clone after ``make demo``: links to the
  project's ``.venv`` and to the folders a command may name (:data:`LINKED`), and what
  ``make demo`` leaves (``headgraph demo --no-serve``: ``headgraph.duckdb`` with the toy
  model). What the commands write stays in that folder. Each bash block runs in ``bash -e -o pipefail`` with the venv on PATH (the README
  says to activate it once per shell), ``COLUMNS=100``; Python blocks run with the venv's
  Python. A block that fails, or prints other output than shown, fails the test.
* Shown output matches when it is equal after trailing spaces are dropped, numbers within a
  relative 1e-4 (float32 sums differ in their last digits between machines); a line
  ``...`` stands for any lines; JSON is compared as parsed JSON.

``python tests/test_readme.py --update`` rewrites the shown outputs with what the commands
print now (review the diff: it is the README's claims that change).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RUN = ("bash", "python")
OUTPUT = ("json", "text", "output")
DIRECTIVE = re.compile(r"<!--\s*doc-test:\s*([\w-]+)\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")
LINKED = ("headgraph", "scripts", "benchmarks", "viewer", "docs", "tests")
"""Folders of the clone linked into the doc test's workspace."""


@dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    end: int  # 1-based line of the closing fence
    directive: tuple[str, str] | None = None
    output: Block | None = None
    runs: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"README.md:{self.line}"


def read_blocks(text: str) -> list[Block]:
    """The README's runnable blocks in order, each with its directive and shown output."""
    lines = text.split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        above = lines[start - 1] if start else ""
        d = DIRECTIVE.search(above)
        blocks.append(Block(m.group(1), "\n".join(lines[start + 1:j]), start + 1, j + 1,
                            (d.group(1), d.group(2)) if d else None))
        i = j + 1
    runnable: list[Block] = []
    for prev, block in zip([None, *blocks], blocks, strict=False):
        if block.lang in OUTPUT and prev is not None and prev.lang in RUN \
                and block.line == prev.end + 1:
            prev.output = block
        elif block.lang in RUN:
            runnable.append(block)
    return runnable


NUMBER = re.compile(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?|[-+]?\d+(?:e[-+]?\d+)?")
REL_TOL = 1e-4


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-6)


def _same_line(shown: str, got: str) -> bool:
    """Equal text, numbers within :data:`REL_TOL` (a table may pad them differently)."""
    if shown == got:
        return True
    a, b = NUMBER.split(shown), NUMBER.split(got)
    x, y = NUMBER.findall(shown), NUMBER.findall(got)
    return (len(x) == len(y) and [p.strip() for p in a] == [p.strip() for p in b]
            and all(_close(float(u), float(v)) for u, v in zip(x, y, strict=True)))


def _same_json(shown, got) -> bool:
    if isinstance(shown, dict) and isinstance(got, dict):
        return shown.keys() == got.keys() and all(_same_json(shown[k], got[k]) for k in shown)
    if isinstance(shown, list) and isinstance(got, list):
        return len(shown) == len(got) and all(map(_same_json, shown, got))
    if isinstance(shown, float | int) and isinstance(got, float | int) \
            and not isinstance(shown, bool) and not isinstance(got, bool):
        return _close(shown, got)
    return shown == got


def _lines_match(shown: list[str], got: list[str]) -> bool:
    """``shown`` equals ``got`` line by line, a ``...`` line matching any run of lines."""
    if not shown:
        return not got
    if shown[0].strip() == "...":
        return any(_lines_match(shown[1:], got[k:]) for k in range(len(got) + 1))
    return bool(got) and _same_line(shown[0], got[0]) and _lines_match(shown[1:], got[1:])


def output_matches(expected: Block, got: str) -> bool:
    if expected.lang == "json":
        try:
            return _same_json(json.loads(expected.code), json.loads(got))
        except ValueError:
            return False
    norm = [line.rstrip() for line in got.rstrip("\n").split("\n")]
    return _lines_match([line.rstrip() for line in expected.code.rstrip("\n").split("\n")],
                        norm)


class Workspace:
    """A fresh folder as ``make demo`` leaves it, where README blocks run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        venv = Path(sys.prefix)  # the venv this test runs in
        if not (folder / ".venv").exists():
            (folder / ".venv").symlink_to(venv, target_is_directory=True)
            for name in LINKED:
                (folder / name).symlink_to(ROOT / name, target_is_directory=True)
        self.env = {**os.environ, "COLUMNS": "100", "HF_HUB_OFFLINE": "1",
                    "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONWARNINGS": "ignore"}
        self.env.pop("HEADGRAPH_DB", None)
        self.env.pop("VIRTUAL_ENV", None)

    def demo(self) -> None:
        done = subprocess.run([sys.executable, "-m", "headgraph.cli", "demo", "--no-serve"],
                              cwd=self.folder, env=self.env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr

    def run(self, block: Block) -> subprocess.CompletedProcess:
        if block.lang == "python":
            cmd = [sys.executable, "-c", block.code]
        else:
            cmd = ["bash", "-e", "-o", "pipefail", "-c", block.code]
        return subprocess.run(cmd, cwd=self.folder, env=self.env, capture_output=True,
                              text=True, timeout=900)

    @contextlib.contextmanager
    def server(self) -> Iterator[int]:
        """``headgraph serve --db headgraph.duckdb`` on a free port while the block runs."""

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(["headgraph", "serve", "--db", "headgraph.duckdb", "--port",
                                 str(port)], cwd=self.folder, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            _healthy(port, deadline, proc)
            yield port
        finally:
            _stop(proc)

    def run_served(self, block: Block) -> subprocess.CompletedProcess[str]:
        """Run a block that talks to ``127.0.0.1:8000`` against a server on a free port."""
        with self.server() as port:
            code = block.code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            return self.run(dataclasses.replace(block, code=code))

    def serve(self, block: Block) -> str:
        """Run a serving block until it answers /healthz; stop it. An error, or ''."""

        proc = subprocess.Popen(["bash", "-c", block.code], cwd=self.folder, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            port = None
            while time.monotonic() < deadline and proc.poll() is None:
                line = proc.stdout.readline()
                found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
                if found:
                    port = int(found.group(1))
                    break
            if port is None:
                return f"never said where it serves (exit {proc.poll()})"
            return "" if _healthy(port, deadline, proc) else \
                "did not answer /healthz within a minute"
        finally:
            _stop(proc)


def _healthy(port: int, deadline: float, proc: subprocess.Popen) -> bool:
    """Whether the server on ``port`` answers /healthz before ``deadline`` (while it runs)."""
    import httpx

    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return True
        except httpx.HTTPError:
            time.sleep(0.2)
    return False


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl-C the process group, then kill it if it has not ended within 20 s."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_every_block_is_run_or_skipped_for_a_stated_reason():
    for block in read_blocks(README.read_text()):
        if block.directive is not None:
            kind, reason = block.directive
            assert kind in ("skip", "serve", "with-server"), \
                f"{block.where}: unknown directive {kind}"
            assert kind != "skip" or reason, f"{block.where}: a skip needs its reason"


@pytest.mark.slow
def test_the_readme_runs_as_written(tmp_path: Path):
    space = Workspace(tmp_path)
    space.demo()
    failures = []
    for block in read_blocks(README.read_text()):
        kind = block.directive[0] if block.directive else None
        if kind == "skip":
            continue
        if kind == "serve":
            problem = space.serve(block)
            if problem:
                failures.append(f"{block.where}: {problem}\n{block.code}")
            continue
        done = space.run_served(block) if kind == "with-server" else space.run(block)
        if done.returncode != 0:
            failures.append(f"{block.where}: exit {done.returncode}\n{block.code}\n"
                            f"{done.stdout[-2000:]}{done.stderr[-3000:]}")
        elif block.output is not None and not output_matches(block.output, done.stdout):
            failures.append(f"{block.where}: printed\n{done.stdout}\nnot what README.md:"
                            f"{block.output.line} shows")
    assert not failures, "\n\n".join(failures)


def compact_json(value, indent: int = 0, width: int = 92) -> str:
    """JSON on as few lines as fit ``width``: a value that fits stays on one line, else its
    members go one per line."""
    flat = json.dumps(value, ensure_ascii=False)
    if len(flat) + indent <= width or not isinstance(value, dict | list) or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: {compact_json(v, indent + 2, width).lstrip()}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + compact_json(v, indent + 2, width).lstrip() for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def update(readme: Path = README) -> int:
    """Rewrite every shown output with what its command prints now; how many changed."""
    import tempfile

    text = readme.read_text()
    lines = text.split("\n")
    changed = 0
    with tempfile.TemporaryDirectory() as tmp:
        space = Workspace(Path(tmp))
        space.demo()
        replacements = []
        for block in read_blocks(text):
            kind = block.directive[0] if block.directive else None
            if kind in ("skip", "serve"):
                continue
            done = space.run_served(block) if kind == "with-server" else space.run(block)
            if done.returncode != 0:
                raise SystemExit(f"{block.where} failed:\n{done.stderr}")
            if block.output is not None and not output_matches(block.output, done.stdout):
                got = done.stdout.rstrip("\n")
                if block.output.lang == "json":
                    try:
                        got = compact_json(json.loads(got))
                    except ValueError:
                        raise SystemExit(f"{block.where} printed no JSON:\n{got}") from None
                replacements.append((block.output.line, block.output.end, got.split("\n")))
        for start, end, new in reversed(replacements):
            lines[start:end - 1] = [line.rstrip() for line in new]
            changed += 1
    readme.write_text("\n".join(lines))
    return changed


if __name__ == "__main__":  # python tests/test_readme.py --update
    if sys.argv[1:] != ["--update"]:
        raise SystemExit("usage: python tests/test_readme.py --update")
    print(f"{update()} shown output(s) rewritten in {README}")
