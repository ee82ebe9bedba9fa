"""web/odin.d.ts, the TypeScript declarations of web/odin.js, checked by the TypeScript
compiler: a program using the whole API compiles with `tsc --noEmit --strict` (and its
@ts-expect-error lines are errors, so nothing is declared `any`), and every export of
odin.js, and every public method of its classes, is declared — read from the module itself
under node, so a new export without a declaration fails here.

The compiler is a test-only npm package pinned in tests/js/types/package-lock.json, installed
by .ci/run (`npm ci` there); without it (or without node) the tests skip and say how to get it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TYPES = ROOT / "tests" / "js" / "types"
TSC = TYPES / "node_modules" / "typescript" / "bin" / "tsc"
NODE = shutil.which("node")
pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install nodejs)"),
    pytest.mark.skipif(not TSC.is_file(), reason="the TypeScript compiler is not installed: "
                                                 "npm ci --prefix tests/js/types (as .ci/run does)"),
]

# what node sees in odin.js: its exports, and the public methods of each exported class
LIST_API = """
const m = await import(process.argv[1]);
const classes = {};
for (const [name, value] of Object.entries(m)) {
  if (typeof value === 'function' && /^class\\b/.test(Function.prototype.toString.call(value))) {
    classes[name] = Object.getOwnPropertyNames(value.prototype).filter((k) => k !== 'constructor' && !k.startsWith('_'));
  }
}
console.log(JSON.stringify({ exports: Object.keys(m), classes }));
"""


def tsc(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([NODE, str(TSC), "-p", str(project), "--noEmit", "--strict", "--pretty", "false"],
                          capture_output=True, text=True, timeout=240)


def test_a_program_using_the_api_compiles_strictly():
    proc = tsc(TYPES / "tsconfig.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_export_and_method_is_declared(tmp_path):
    listed = subprocess.run([NODE, "--input-type=module", "-e", LIST_API, (ROOT / "web" / "odin.js").as_uri()],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    api = json.loads(listed.stdout)
    assert {"loadModel", "OdinModel", "OdinError"} <= set(api["exports"]) and "OdinModel" in api["classes"]
    module = os.path.relpath(ROOT / "web" / "odin.js", tmp_path).replace(os.sep, "/")
    lines = [f"import * as odin from '{module}';",
             # both ways: a declared export missing from odin.js, or one not declared, is an error
             "export const exported: { [K in keyof typeof odin]: true } = {"
             + ", ".join(f"{name}: true" for name in api["exports"]) + "};"]
    for name, methods in api["classes"].items():
        lines.append(f"export const {name}Methods: Array<keyof odin.{name}> = {json.dumps(methods)};")
    (tmp_path / "api.ts").write_text("\n".join(lines) + "\n")
    config = json.loads((TYPES / "tsconfig.json").read_text())
    config["files"] = ["api.ts"]
    (tmp_path / "tsconfig.json").write_text(json.dumps(config))
    proc = tsc(tmp_path / "tsconfig.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
