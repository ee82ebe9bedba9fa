"""Every command README.md and docs/*.md show, run as an installed entry point.

The package is installed NON-editable (``pip install --no-build-isolation --no-deps``, the C
library compiled once per session) into a temporary virtualenv that borrows the running
environment's dependencies through a ``.pth`` file, so nothing is downloaded. Every command
runs in a subprocess from a folder outside the source tree, so the checkout is not importable:
what is tested is what ``pip install .`` gives a user, page, odin.js and .wasm files included.

ROWS lists the commands. ``test_every_documented_command_has_a_row`` reads the command lines
of the README and docs (tests/doc_commands.py) and fails when a documented program and
sub-command, or one of its documented flags, appears in no row. To cover a new documented
command, add ONE row to ROWS, e.g.::

    Row("odin export gguf {ckpt} {tmp}/model.gguf", out=r"wrote"),

``cmd`` is split like a shell line (``&&`` chains commands, run in order in the same folder);
its first word is an installed program. Placeholders name things the row needs, each made
once per session by the installed commands themselves (see ``Workspace``):

    {tmp}       a fresh empty folder for this row (also its working directory)
    {data}      an addition dataset (odin data build)      {config}   a TOML model config
    {run}       a short odin train run on {data}           {ckpt}     its checkpoint ({run}/checkpoint)
    {run_copy}  a private copy of {run} (to --resume)      {ckpt_rwkv} a short rwkv-tiny checkpoint
    {web}       odin export web of {ckpt}                  {static}   the installed page's folder
    {ptoml}     a small pipeline.toml                      {inbox}    a fresh pipeline folder with documents
    {prompts}   a prompt file for odin-infer -f          {qckpt}    {ckpt} quantized (odin quantize, q4_0)
    {pipe}      a pipeline folder after one run --once     {pipe_ckpt} its checkpoint

``out`` is a regex the combined stdout+stderr must match, ``rc`` the exit status, ``stdin``
text fed to the command, ``env`` extra environment variables, ``one_line`` a refusal that
must be exactly one line on stderr, ``http`` paths a server (the last command of the row) must answer
with 200, ``slow`` marks rows too heavy for the default run (pytest -m slow).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from doc_commands import LAUNCHERS, PROGRAMS, documented_commands, parse, parsers
from interchange_models import in_ci
from odin.config import PRESETS
from pipeline_helpers import config_text, write_docs

SRC = Path(__file__).resolve().parent.parent
DOCS = [SRC / "README.md", *sorted((SRC / "docs").glob("*.md"))]
# presets whose one training step allocates gigabytes (~110M parameters): pytest -m slow
HEAVY_PRESETS = {"odin-100m", "odin-100m-rwkv"}
SERVED = ("/", "/odin.js", "/demo.js", "/wasm/odin-simd128.wasm", "/wasm/odin-scalar.wasm", "/wasm/odin-wasm.json")
MODEL_SERVED = ("/model/model.json", "/model/weights.bin")


@dataclass(frozen=True)
class Row:
    cmd: str
    out: str = ""
    rc: int = 0
    stdin: Optional[str] = None
    http: tuple[str, ...] = ()
    slow: bool = False
    one_line: bool = False  # a refusal: exactly one line on stderr, no traceback
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables
    mpi: bool = False  # started by mpirun: needs OpenMPI and mpi4py (skips without them, fails in CI)


# OpenMPI refuses to run as root (CI containers) unless told
MPI_ENV = (("OMPI_ALLOW_RUN_AS_ROOT", "1"), ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
           ("OMPI_MCA_btl_vader_single_copy_mechanism", "none"))

ROWS: list[Row] = [
    # ---- odin info, odin model info (every preset, and a config file)
    Row("odin info", out=r"ISA in use\s+(scalar|avx2|avx512)"),
    Row("odin info --json", out=r'"available_isas"'),
    *[Row(f"odin model info {name}", out=r"param") for name in PRESETS],
    Row("odin model info {config}", out=r"param"),
    Row("odin model info odin-100m --batch 4 --seq-len 256 --threads 2", out=r"slot gradient buffers \(2\)"),
    Row("odin model info arith-3digit --threads 99", out=r"--threads must be in 0..64", rc=2, one_line=True),
    # ---- odin data build
    Row("odin data build --out {tmp}/d --ops add,sub,mul,div --max-digits 3 --reverse --n 200 --seed 3",
        out=r"wrote .*train 160"),
    Row("odin data build --out {tmp}/d --tasks arith,algebra,code --mix 0.4,0.3,0.3 --scratchpad --n 40",
        out=r"wrote"),
    Row("odin data build --out {tmp}/d --ops add --max-digits 5 --prompt-zeros 10 --n 100", out=r"wrote"),
    # ---- odin train: flags, --resume, every preset (1 step), a preset without a dataset
    Row("odin train --data {data} --steps 3 --threads 2 --seed 5 --out {tmp}/r --json", out=r'"checkpoint"'),
    # a finished run has nothing left to resume: a clear refusal (resuming mid-run: test_train_e2e.py)
    Row("odin train --data {data} --out {run_copy} --resume", rc=2, out=r"finished", one_line=True),
    Row("odin train --data {data} --steps 3 --out {run_copy} --overwrite", out=r"trained 3 steps"),
    Row("odin train --data {data} --steps 3 --out {tmp}/r --init-from {ckpt}", out=r"trained 3 steps"),
    *[Row(f"odin train --preset {name} --data {{data}} --steps 1 --threads 2 --out {{tmp}}/r",
          out=r"trained 1 steps", slow=name in HEAVY_PRESETS) for name in PRESETS],
    Row("odin train --preset tiny --steps 1", rc=2, out=r"names no dataset: pass --data DIR", one_line=True),
    # ---- odin eval
    # over MPI ranks (docs: README "Training on several processes and hosts")
    Row("mpirun --oversubscribe -np 2 odin train --preset arith-3digit --data {data} --steps 3 --threads 1 "
        "--out {tmp}/r", env=MPI_ENV, out=r"x 2 MPI ranks", mpi=True),
    Row("mpirun --oversubscribe -np 3 odin train --data {data} --out {run_copy} --resume --threads 1", env=MPI_ENV,
        rc=2, out=r"^odin train: error: .*finished", mpi=True),  # (resuming over ranks: tests/test_mpi.py)
    Row("odin eval {ckpt} --data {data} --splits test --json", out=r'"test"'),
    Row("odin eval {ckpt_rwkv} --data {data} --splits val --context 64", out=r"val"),
    # ---- odin-infer: one prompt, the sampler's flags, the REPL, a pipeline (BPE) model
    Row("odin-infer -m {ckpt} -p 12+34= -n 8 --json", out=r'"completion"|"text"|"tokens"'),
    Row("odin-infer -m {ckpt} -e -p 12+34= -n 8 -t 2 --temperature 0.8 --top-k 5 --top-p 0.9 --seed 1 --stop 9"),
    Row("odin-infer -m {ckpt}", stdin="12+34=\n"),
    Row("odin-infer -m {pipe_ckpt} -p 'The pipeline' -n 20 --temperature 0.8"),
    Row("odin-infer -m {ckpt} -f {prompts} -n 8", out=r"\d"),
    Row("odin-infer -m {ckpt} -p 12+34= -n 8 --raw", out=r"\d"),
    # ---- interchange: each export read back by odin itself (the third-party readers are
    # tests/test_interchange_*.py); the round trip answers like the original
    Row("odin export gguf {ckpt} {tmp}/m.gguf --type f16 && odin import gguf {tmp}/m.gguf {tmp}/back && "
        "odin-infer -m {tmp}/back -p 12+34= -n 8", out=r"\d"),
    # quantized GGUF: the blocks go out and come back as a quantized checkpoint that answers
    Row("odin export gguf {ckpt} {tmp}/q.gguf --type q4_0 && odin import gguf {tmp}/q.gguf {tmp}/back && "
        "odin-infer -m {tmp}/back -p 12+34= -n 8", out=r"q4_0 \(embedding q8_0\)[\s\S]*\d"),
    Row("odin export gguf {ckpt} {tmp}/q.gguf --type q3_0", rc=2, out=r"--type must be one of", one_line=True),
    Row("odin export hf {ckpt} {tmp}/hf && odin import hf {tmp}/hf {tmp}/back && "
        "odin-infer -m {tmp}/back -p 12+34= -n 8", out=r"\d"),
    Row("odin export hf {ckpt_rwkv} {tmp}/hf"),
    Row("odin export onnx {ckpt} {tmp}/m.onnx && odin export onnx {ckpt_rwkv} {tmp}/r.onnx"),
    Row("odin export gguf {ckpt_rwkv} {tmp}/r.gguf", rc=2, out=r"RWKV", one_line=True),
    # ---- the browser runtime: export, then serve the page, odin.js, the .wasm builds and the model
    Row("odin export web {ckpt} web/model --examples 16 --demo-prompts 2 --data {data} --seed 1 && "
        "odin serve-web --port 0", http=SERVED + MODEL_SERVED),
    # quantized weights for the page: the blocks in weights.bin; an unknown type is one line
    Row("odin export web {ckpt} web/model --quant q8_0 && odin serve-web --port 0", http=SERVED + MODEL_SERVED),
    Row("odin export web {ckpt} {tmp}/w --quant q3_k", rc=2, out=r"unknown quantization type 'q3_k'", one_line=True),
    Row("odin serve-web --port 0 --host 127.0.0.1 --model {web} --web {static}", http=SERVED + MODEL_SERVED),
    Row("odin serve-web --port 0", http=SERVED),  # no model exported yet: the page still loads
    # the wasm build needs the C sources: from an installed package, a one-line refusal
    Row("odin wasm build --out {tmp}/wasm", rc=1, out=r"source checkout", one_line=True),
    # ---- odin quantize (docs/quantization.md): the quantized checkpoint answers; what it refuses is
    # one line (every refusal, and the memory odin quantize holds: tests/test_quant_cli.py)
    Row("odin quantize {ckpt} {tmp}/q4 --type q4_0 && odin-infer -m {tmp}/q4 -p 12+34= -n 8 && "
        "odin eval {tmp}/q4 --splits test && odin model info {tmp}/q4", out=r"q4_0 matrices, embedding"),
    Row("odin quantize {run} {tmp}/q --type q8_0 --embed f32 && odin quantize {ckpt} {tmp}/q --type q5_1 --overwrite",
        out=r"to q5_1 \(embedding q8_0\): [\d.]+ MiB -> [\d.]+ MiB"),
    Row("odin quantize {ckpt_rwkv} {tmp}/q --type q4_1 && odin-infer -m {tmp}/q -p 12+34= -n 8"),
    Row("odin quantize {ckpt} {tmp}/q --type q3_k", rc=2, out=r"unknown quantization type 'q3_k'", one_line=True),
    Row("odin quantize {qckpt} {tmp}/q --type q8_0", rc=2, out=r"quantized already", one_line=True),
    Row("odin train --data {data} --steps 3 --out {tmp}/r --init-from {qckpt}", rc=2,
        out=r"quantized as q4_0 \(embedding q8_0\): it can answer but not train", one_line=True),
    # ---- odin-pipeline
    Row("odin-pipeline run {inbox} --config {ptoml} --once --quiet"),
    Row("mpirun --oversubscribe -np 2 odin-pipeline run {inbox} --config {ptoml} --once --quiet", env=MPI_ENV,
        out=r"trained \d+", mpi=True),
    Row("odin-pipeline status {pipe}", out=r"shard|token"),
    Row("odin-pipeline status {pipe} --json", out=r"^\s*\{"),
    Row("odin-pipeline check-config {ptoml}", out=r"\[model\]"),
    # ---- ODIN_ISA (README): any case works; a bad name is one line in every program
    Row("odin info", env=(("ODIN_ISA", "SCALAR"),), out=r"ISA in use\s+scalar"),
    *[Row(cmd, env=(("ODIN_ISA", "neon"),), rc=2, out=r"ODIN_ISA='neon'", one_line=True) for cmd in (
        "odin info", "odin-infer -m {ckpt} -p 1+1=", "odin-pipeline status {pipe}", "odin-dashboard --help")],
    # ---- odin-dashboard: the window is tested in test_dashboard_gui.py; here the installed
    # entry point parses the documented flags and, with no display, says so in one line
    Row("odin-dashboard --help", out=r"usage: odin-dashboard"),
    Row("odin-dashboard --preset small --data {data} --out {tmp}/r --threads 2 --checkpoint {ckpt} --autostart "
        "--exit-after 5 --screenshot {tmp}/s.png --eval-every 250 --ask 12+34=", rc=2, out=r"no display"),
]


# ------------------------------------------------------------------ the installed package
TOP_LEVEL_OUTPUTS = {".git", "build", "dist", "runs", "data", "demo"}  # the checkout's, not its package's


def _not_source(folder: str, names: list[str]) -> set[str]:
    """What the copy of the checkout leaves out: build and run outputs, virtualenvs, exports."""
    here = Path(folder).resolve()
    skip = {n for n in names if n.startswith(".venv") or n.endswith((".egg-info", ".so")) or
            n in ("__pycache__", ".pytest_cache", "node_modules", "_native.c")}
    if here == SRC:
        skip |= TOP_LEVEL_OUTPUTS & set(names)
    if here == SRC / "web":
        skip |= {"model"} & set(names)
    return skip


def _installed_venv(root: Path) -> Path:
    """A virtualenv with ODIN installed from a copy of the source tree (not editable)."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # the running environment's packages (numpy, cffi, setuptools...) without installing them again
    # (its own editable odin is not importable from there: that needs its .pth, not processed here)
    ours = sysconfig.get_paths()
    Path(purelib, "odin-test-deps.pth").write_text("\n".join(dict.fromkeys((ours["purelib"], ours["platlib"]))) + "\n")
    source = root / "source"  # a fresh copy: no stale build/ of the checkout in the wheel
    shutil.copytree(SRC, source, symlinks=True, ignore=_not_source)
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                          "--no-build-isolation", "--no-deps", "--no-cache-dir", str(source)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"pip install failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    shutil.rmtree(source)
    return venv


@dataclass
class Result:
    rc: int
    out: str
    err: str
    http: dict[str, tuple[int, bytes]] = field(default_factory=dict)


class Workspace:
    """The installed commands, a folder outside the source tree, and what rows need, made lazily."""

    def __init__(self, root: Path, venv: Path) -> None:
        self.root, self.venv, self.bin = root, venv, venv / "bin"
        self.shared = root / "shared"
        self.shared.mkdir()
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PYTHONPATH", "DISPLAY", "WAYLAND_DISPLAY", "ODIN_ISA", "VIRTUAL_ENV")}
        self.env["PATH"] = f"{self.bin}{os.pathsep}{self.env.get('PATH', '')}"
        self._made: dict[str, str] = {}
        self._rows = 0

    # -- running
    def argv(self, part: str) -> list[str]:
        words = shlex.split(part)
        if words and words[0] in LAUNCHERS:  # mpirun [options] PROGRAM ...: the installed PROGRAM
            start = next(i for i, word in enumerate(words) if word in PROGRAMS)
            return [shutil.which(words[0]) or words[0], *words[1:start], str(self.bin / words[start]),
                    *words[start + 1:]]
        assert words and words[0] in PROGRAMS, f"{part!r}: a row runs installed ODIN programs only"
        return [str(self.bin / words[0]), *words[1:]]

    def run(self, cmd: str, cwd: Path, stdin: Optional[str] = None, timeout: float = 600,
            env: tuple[tuple[str, str], ...] = ()) -> Result:
        out, err = [], []
        for part in cmd.split(" && "):
            res = subprocess.run(self.argv(part), cwd=cwd, env={**self.env, **dict(env)}, input=stdin or "",
                                 capture_output=True, text=True, timeout=timeout)
            out.append(res.stdout)
            err.append(res.stderr)
            if res.returncode != 0:
                break
        return Result(res.returncode, "".join(out), "".join(err))

    def must(self, cmd: str, cwd: Optional[Path] = None) -> Result:
        res = self.run(cmd, cwd or self.shared)
        assert res.rc == 0, f"{cmd}: exit {res.rc}\n{res.out[-2000:]}\n{res.err[-2000:]}"
        return res

    def serve(self, cmd: str, cwd: Path, paths: tuple[str, ...]) -> Result:
        """Run all but the last command, start the last as a server, GET `paths`, stop it (Ctrl-C)."""
        *before, server = cmd.split(" && ")
        if before:
            res = self.run(" && ".join(before), cwd)
            if res.rc != 0:
                return res
        proc = subprocess.Popen(self.argv(server), cwd=cwd, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(120)
        answers: dict[str, tuple[int, bytes]] = {}
        try:
            match = re.search(r"http://[\d.]+:\d+/", first[0] if first else "")
            if match:
                for path in paths:
                    try:
                        with urllib.request.urlopen(match.group(0) + path.lstrip("/"), timeout=60) as response:
                            answers[path] = (response.status, response.read())
                    except urllib.error.HTTPError as error:
                        answers[path] = (error.code, b"")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                rest, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rest, err = proc.communicate()
        return Result(proc.returncode, "".join(first) + rest, err, answers)

    # -- what rows need (each made once, by installed commands)
    def value(self, name: str, row_dir: Path) -> str:
        if name == "tmp":
            return str(row_dir)
        if name == "run_copy":
            copy = row_dir / "run"
            shutil.copytree(self.value("run", row_dir), copy)
            return str(copy)
        if name == "inbox":
            folder = row_dir / "pipe"
            write_docs(folder / "inbox", 40)
            return str(folder)
        if name not in self._made:
            self._made[name] = str(getattr(self, f"_make_{name}")())
        return self._made[name]

    def _make_data(self) -> Path:
        self.must(f"odin data build --out {self.shared}/data --ops add --max-digits 2 --reverse --n 200 --seed 1")
        return self.shared / "data"

    def _make_config(self) -> Path:
        path = self.shared / "model.toml"
        path.write_text('preset = "tiny"\n[model]\nn_layer = 1\n[train]\nsteps = 10\n')
        return path

    def _make_run(self) -> Path:
        data = self.value("data", self.shared)
        self.must(f"odin train --data {data} --steps 20 --threads 2 --out {self.shared}/run")
        return self.shared / "run"

    def _make_ckpt(self) -> Path:
        return Path(self.value("run", self.shared)) / "checkpoint"

    def _make_ckpt_rwkv(self) -> Path:
        data = self.value("data", self.shared)
        self.must(f"odin train --preset rwkv-tiny --data {data} --steps 5 --threads 2 --out {self.shared}/rwkv")
        return self.shared / "rwkv" / "checkpoint"

    def _make_prompts(self) -> Path:
        path = self.shared / "prompts.txt"
        path.write_text("12+34=\n")
        return path

    def _make_web(self) -> Path:
        self.must(f"odin export web {self.value('ckpt', self.shared)} {self.shared}/web --examples 8")
        return self.shared / "web"

    def _make_static(self) -> Path:
        res = subprocess.run([str(self.bin / "python"), "-c", "from odin.web.build import WEB; print(WEB)"],
                             cwd=self.shared, env=self.env, capture_output=True, text=True, check=True)
        return Path(res.stdout.strip())

    def _make_ptoml(self) -> Path:
        path = self.shared / "pipeline.toml"
        path.write_text(config_text())
        return path

    def _make_pipe(self) -> Path:
        folder = self.shared / "pipe"
        write_docs(folder / "inbox", 40)
        self.must(f"odin-pipeline run {folder} --config {self.value('ptoml', self.shared)} --once --quiet")
        return folder

    def _make_pipe_ckpt(self) -> Path:
        return Path(self.value("pipe", self.shared)) / "checkpoints" / "latest"

    def _make_qckpt(self) -> Path:
        self.must(f"odin quantize {self.value('ckpt', self.shared)} {self.shared}/qckpt --type q4_0")
        return self.shared / "qckpt"

    def row_dir(self) -> Path:
        self._rows += 1
        folder = self.root / f"row{self._rows:03d}"
        folder.mkdir()
        return folder

    def substitute(self, cmd: str, row_dir: Path) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: shlex.quote(self.value(m.group(1), row_dir)), cmd)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("installed")
    assert SRC not in root.parents, "the commands must run outside the source tree"
    return Workspace(root, _installed_venv(root))


# ------------------------------------------------------------------ the tests
def test_the_installed_package_is_not_the_checkout(workspace):
    res = subprocess.run([str(workspace.bin / "python"), "-c",
                          "import odin, odin.web.build as b; print(odin.__file__); print(b.WEB)"],
                         cwd=workspace.shared, env=workspace.env, capture_output=True, text=True, check=True)
    package, static = (Path(line) for line in res.stdout.split())
    assert workspace.venv in package.parents and SRC not in package.resolve().parents
    assert workspace.venv in static.parents and not static.is_symlink()
    for name in ("index.html", "odin.js", "demo.js", "wasm/odin-simd128.wasm", "wasm/odin-scalar.wasm"):
        assert (static / name).is_file(), f"{name} is not in the installed package"


def _row_id(row: Row) -> str:
    return " ".join([*(f"{k}={v}" for k, v in row.env), row.cmd])[:90]


@pytest.mark.parametrize("row", [pytest.param(r, id=_row_id(r), marks=[pytest.mark.slow] if r.slow else [])
                                 for r in ROWS])
def test_installed_command(workspace, row: Row):
    if row.mpi and not (shutil.which("mpirun") and importlib.util.find_spec("mpi4py")):
        if in_ci():
            pytest.fail("CI must run the documented mpirun commands: install openmpi-bin and mpi4py")
        pytest.skip("needs mpirun (apt install openmpi-bin libopenmpi-dev) and mpi4py (pip install 'odin[mpi]')")
    row_dir = workspace.row_dir()
    cmd = workspace.substitute(row.cmd, row_dir)
    res = (workspace.serve(cmd, row_dir, row.http) if row.http
           else workspace.run(cmd, row_dir, row.stdin, env=row.env))
    shown = f"$ {' '.join(f'{k}={v}' for k, v in row.env)} {cmd}\nexit {res.rc}\n--- stdout\n{res.out[-3000:]}\n--- stderr\n{res.err[-3000:]}"
    assert res.rc == row.rc, shown
    assert "Traceback" not in res.err, shown
    if row.out:
        assert re.search(row.out, res.out + res.err, re.M), f"no match for {row.out!r}\n{shown}"
    if row.one_line:
        assert len(res.err.strip().splitlines()) == 1, shown
    for path in row.http:
        status, body = res.http.get(path, (None, b""))
        assert status == 200 and body, f"GET {path}: {status}\n{shown}"
    if row.http:
        assert b"odin.js" in res.http["/"][1] or b"demo.js" in res.http["/"][1]
        assert res.http["/wasm/odin-simd128.wasm"][1][:4] == b"\0asm"
        if "/model/model.json" in row.http:
            assert "n_params" in json.loads(res.http["/model/model.json"][1])


def _row_commands():
    parser_of = parsers()
    for row in ROWS:
        for part in row.cmd.split(" && "):
            command = parse(part, f"ROWS: {row.cmd}", parser_of)
            assert command is not None and not command.problem, f"row {row.cmd!r}: {command and command.problem}"
            yield command


def test_documented_commands_exist():
    """Every documented sub-command and flag is one the installed CLI accepts."""
    problems = [f"{c.where}: `{c.text}`: {c.problem}" for c in documented_commands(DOCS, SRC) if c.problem]
    assert not problems, "documented but not accepted by the CLI:\n" + "\n".join(problems)


def test_every_documented_command_has_a_row():
    """A command shown in README.md or docs/ (its program, sub-command and each of its flags)
    must be run by some row of ROWS: add a row (module docstring) when documenting one."""
    tested: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
    for command in _row_commands():
        tested.setdefault((command.launcher, command.program, command.path), set()).update(command.flags)
    missing = []
    for command in documented_commands(DOCS, SRC):
        key = (command.launcher, command.program, command.path)
        name = " ".join(filter(None, (command.launcher, command.program, *command.path)))
        if key not in tested:
            missing.append(f"{command.where}: `{command.text}`: no row runs `{name}`")
        elif command.flags - tested[key]:
            missing.append(f"{command.where}: `{command.text}`: no row of `{name}` uses "
                           f"{', '.join(sorted(command.flags - tested[key]))}")
    assert not missing, ("documented commands without an installed-command test; add a Row to ROWS in "
                         "tests/test_installed_commands.py:\n" + "\n".join(missing))
