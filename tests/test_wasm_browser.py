"""End to end in headless Chromium: `odin serve-web` serves the demo page and an exported
model; the page loads it (weights into wasm memory), answers a problem with the same tokens
as the native engine, runs real training steps (forward, backward, AdamW in wasm) and, after
a reload, takes the weights from its IndexedDB cache instead of downloading them again.

Chromium is driven over the DevTools protocol with a minimal WebSocket client (standard
library only). Skipped, with the reason, only when no chromium is installed (Debian:
apt-get install chromium).
"""
from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from wasm_support import tiny_arith_model, wasm_path

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
ROOT = Path(__file__).resolve().parent.parent


class CDP:
    """Just enough of a WebSocket client (RFC 6455) for the DevTools protocol."""

    def __init__(self, ws_url: str, timeout: float = 30.0) -> None:
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", ws_url)
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.decode(errors="replace"))
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0

    def _recv_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("DevTools connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
                                if n < 65536 else bytes([0x80 | 127]) + n.to_bytes(8, "big"))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _recv(self) -> dict:
        message = b""
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._recv_exact(2), "big")
            elif n == 127:
                n = int.from_bytes(self._recv_exact(8), "big")
            payload = self._recv_exact(n)
            if b0 & 0x0F == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if b0 & 0x0F in (0x9, 0xA):  # ping / pong
                continue
            message += payload
            if b0 & 0x80:
                return json.loads(message)

    def call(self, method: str, timeout: float = 60.0, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self._send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self._recv()
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
        raise TimeoutError(method)

    def evaluate(self, expression: str, timeout: float = 60.0):
        res = self.call("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                        returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page error: {json.dumps(res['exceptionDetails'])[:2000]}")
        return res["result"].get("value")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """An exported tiny arithmetic model and the demo served on a free localhost port."""
    from odin.checkpoint import save_model_checkpoint
    from odin.web.export import export_web
    from odin.web.serve import serve_in_thread

    wasm = wasm_path("simd128", tmp_path_factory, need_wasmtime=False)
    wasm_path("scalar", tmp_path_factory, need_wasmtime=False)
    model, config, tok, examples = tiny_arith_model()
    d = tmp_path_factory.mktemp("browser")
    settings = {"ops": ["add"], "min_digits": 1, "max_digits": 2, "reverse_answer": False}
    save_model_checkpoint(d / "ckpt", model, tok, config, step=300,
                          trainer_state={"dataset": {"settings": settings}, "reverse_answer": False})
    export_web(d / "ckpt", d / "model", examples=64, demo_prompts=4)
    web = ROOT / "web"
    if wasm.parent != web / "wasm":  # artifacts rebuilt elsewhere (stale committed ones): serve a copy
        web = d / "web"
        shutil.copytree(ROOT / "web", web, ignore=shutil.ignore_patterns("model", "wasm"))
        shutil.copytree(wasm.parent, web / "wasm")
    server, url = serve_in_thread(web_dir=web, model_dir=d / "model")
    yield url, model, tok, d
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1000,1300", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline and port is None:
            line = proc.stderr.readline()
            if not line:
                if proc.poll() is not None:
                    break
                continue
            lines.append(line)
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                port = int(m.group(1))
        if port is None:
            pytest.fail("chromium did not start:\n" + "".join(lines[-20:]))
        for _ in range(50):
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                break
            time.sleep(0.1)
        cdp = CDP(pages[0]["webSocketDebuggerUrl"])
        cdp.call("Runtime.enable")
        cdp.call("Page.enable")
        yield cdp
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def navigate_to_demo(cdp: CDP, url: str) -> None:
    """Open the demo page and wait until its module has run (window.odinDemo exists)."""
    cdp.call("Page.navigate", url=url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if cdp.evaluate("typeof window.odinDemo === 'object' && document.readyState === 'complete'"):
            break
        time.sleep(0.05)


def open_page(cdp: CDP, url: str) -> dict:
    navigate_to_demo(cdp, url)
    return cdp.evaluate("""(async () => {
        await window.odinDemo.ready;
        const m = window.odinDemo.model;
        return { loadInfo: m.loadInfo, isa: m.odin.isa(), variant: m.odin.variant, memory: m.memoryBytes(),
                 planned: m.plannedBytes, detail: document.getElementById('load-detail').textContent,
                 error: document.getElementById('error').textContent, arch: m.arch,
                 badge: document.getElementById('arch').textContent,
                 engine: document.getElementById('engine').textContent,
                 memoryText: document.getElementById('memory').textContent };
    })()""")


def test_demo_page_generates_and_trains(site, browser, tmp_path):
    url, model, tok, d = site
    first = open_page(browser, url + "?model=/model/")
    assert first["error"] == ""
    assert first["isa"] == "wasm_simd128" and first["variant"] == "simd128"
    assert first["loadInfo"]["fromCache"] is False
    assert first["memory"] >= first["planned"]
    assert first["arch"] == "gpt" and first["badge"] == "GPT" and "4 heads" in first["engine"]
    assert "KV cache" in first["memoryText"]

    prompt = json.loads((d / "model" / "model.json").read_text())["demo_prompts"][0]
    solved = browser.evaluate(f"""(async () => {{
        document.getElementById('prompt').value = {json.dumps(prompt)};
        const r = await window.odinDemo.solve();
        return {{ ...r, answerText: document.getElementById('answer').textContent,
                  stats: document.getElementById('gen-stats').textContent }};
    }})()""")
    expected = model.generate_greedy([[tok.bos_id, *tok.encode(prompt)]], max_new=8, end_id=tok.end_id)[0]
    assert solved["tokens"] == expected[:len(solved["tokens"])] and solved["tokens"][-1] == tok.end_id
    assert solved["tokens"] == expected
    assert solved["raw"] == tok.decode(expected)
    native_answer = tok.decode(expected)
    assert solved["answerText"].startswith(prompt + native_answer)
    assert solved["correct"] == (native_answer == solved["expected"])  # the page checks arithmetic itself
    # speed in two parts: the prompt (prefill) and each further token (decode)
    stats = re.fullmatch(r"prefill: (\d+) prompt tokens in [\d.]+ ms · decode: (\d+) tokens in [\d.]+ ms, "
                         r"([\d,]+|—) tokens/s \((\d+) tokens generated\)", solved["stats"])
    assert stats, solved["stats"]
    assert int(stats[1]) == 1 + len(tok.encode(prompt)) and int(stats[4]) == len(solved["tokens"])
    assert int(stats[2]) == len(solved["tokens"]) - 1

    trained = browser.evaluate("""(async () => {
        const steps = await window.odinDemo.train(3);
        return { losses: steps.map(s => s.loss), norms: steps.map(s => s.gradNorm), step: steps.at(-1).step,
                 text: document.getElementById('train-stats').textContent };
    })()""", timeout=120)
    assert len(trained["losses"]) == 3 and trained["step"] == 3
    assert all(l == l and 0 <= l < 50 for l in trained["losses"]), trained  # finite
    assert all(n > 0 for n in trained["norms"])
    assert trained["text"].startswith("step 3: loss")

    shot = browser.call("Page.captureScreenshot", format="png")
    (tmp_path / "demo.png").write_bytes(base64.b64decode(shot["data"]))

    # a reload takes the weights from IndexedDB: no second download
    second = open_page(browser, url + "?model=/model/")
    assert second["loadInfo"]["fromCache"] is True, second
    assert "IndexedDB" in second["detail"]


def test_demo_page_runs_an_rwkv_export(site, browser):
    """The same page with an RWKV-4 export (served next to the GPT one, ?model=/model/rwkv/):
    it shows the architecture, answers with the native tokens, generates 3x past the
    training context with the native tokens (no length limit), and trains in the page."""
    from odin.checkpoint import save_model_checkpoint
    from odin.model import Sampler, stream_tokens
    from odin.web.export import export_web

    url, _, _, d = site
    model, config, tok, examples = tiny_arith_model("rwkv")
    settings = {"ops": ["add"], "min_digits": 1, "max_digits": 2, "reverse_answer": False}
    save_model_checkpoint(d / "rwkv-ckpt", model, tok, config, step=300,
                          trainer_state={"dataset": {"settings": settings}, "reverse_answer": False})
    export_web(d / "rwkv-ckpt", d / "model" / "rwkv", examples=64, demo_prompts=4)

    page = open_page(browser, url + "?model=/model/rwkv/")
    assert page["error"] == "" and page["arch"] == "rwkv" and page["badge"] == "RWKV-4"
    assert "RWKV-4" in page["engine"] and "no limit when generating" in page["engine"]
    assert "recurrent state" in page["memoryText"]

    prompt = json.loads((d / "model" / "rwkv" / "model.json").read_text())["demo_prompts"][0]
    solved = browser.evaluate(f"""(async () => {{
        document.getElementById('prompt').value = {json.dumps(prompt)};
        const r = await window.odinDemo.solve();
        return {{ ...r, answerText: document.getElementById('answer').textContent }};
    }})()""")
    expected = model.generate_greedy([[tok.bos_id, *tok.encode(prompt)]], max_new=8, end_id=tok.end_id)[0]
    assert solved["tokens"] == expected and expected[-1] == tok.end_id
    assert solved["answerText"].startswith(prompt + tok.decode(expected))

    n = 3 * config.model.context
    long = browser.evaluate(f"""(async () => {{
        const r = await window.odinDemo.model.generate({json.dumps(prompt)}, {{ maxTokens: {n}, temperature: 0, stop: [] }});
        return r.tokens;
    }})()""")
    want = list(stream_tokens(model, [tok.bos_id, *tok.encode(prompt)], n, Sampler(temperature=0.0)))
    assert len(want) == n and long == want

    trained = browser.evaluate("""(async () => {
        const steps = await window.odinDemo.train(3);
        return { losses: steps.map(s => s.loss), step: steps.at(-1).step,
                 text: document.getElementById('train-stats').textContent };
    })()""", timeout=120)
    assert trained["step"] == 3 and all(l == l and 0 <= l < 50 for l in trained["losses"]), trained
    assert trained["text"].startswith("step 3: loss")


def _key(cdp: CDP, key: str, text: str, shift: bool = False) -> None:
    """One real key press (down and up), as a person at the keyboard gives it."""
    code = {"Enter": 13}[key]
    for kind in ("keyDown", "keyUp"):
        params = dict(type=kind, key=key, code=key, windowsVirtualKeyCode=code, modifiers=8 if shift else 0)
        if kind == "keyDown":
            params["text"] = text
        cdp.call("Input.dispatchKeyEvent", **params)


def test_demo_prompt_takes_lines_and_enter_solves(site, browser, tmp_path):
    """Programs (the code recipe's prompts) have lines: Shift+Enter adds one to the prompt,
    the box grows with it, Enter asks the model the whole prompt."""
    url, _, tok, _ = site
    assert open_page(browser, url + "?model=/model/")["error"] == ""
    browser.evaluate("(() => { const p = document.getElementById('prompt'); p.value = ''; p.focus(); })()")
    browser.call("Input.insertText", text="1+2")
    _key(browser, "Enter", "\r", shift=True)
    browser.call("Input.insertText", text="3=")
    box = browser.evaluate("(() => { const p = document.getElementById('prompt'); return [p.value, p.rows]; })()")
    assert box == ["1+2\n3=", 2]
    _key(browser, "Enter", "\r")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "tokens generated" not in browser.evaluate(
            "document.getElementById('gen-stats').textContent"):
        time.sleep(0.05)
    page = browser.evaluate("""(() => ({ value: document.getElementById('prompt').value,
        answer: document.getElementById('answer').textContent,
        promptTokens: window.odinDemo.model.lastStats.promptTokens }))()""")
    assert page["value"] == "1+2\n3="  # Enter asked; it added no line
    assert page["answer"].startswith("1+2\n3=")
    assert page["promptTokens"] == 1 + len(tok.encode("1+2\n3="))  # <bos> and every character, the newline too
    shot = browser.call("Page.captureScreenshot", format="png")
    (tmp_path / "demo-lines.png").write_bytes(base64.b64decode(shot["data"]))


def test_demo_gives_long_answers_room(site, browser):
    """An export whose answers are long (scratchpads, program traces) raises the page's
    max-tokens from its default 32 to a quarter more than the longest exported answer
    (capped by the context), so a trace is not cut off."""
    from odin.checkpoint import model_from_config, save_model_checkpoint
    from odin.config import ModelConfig, RunConfig, TrainConfig
    from odin.data.dataset import build_mixed_dataset
    from odin.tokenizers import CharTokenizer
    from odin.web.export import export_web

    url, _, _, d = site
    build_mixed_dataset(d / "algebra-data", seed=5, n_examples=120, n_heldout=0, tasks=["algebra"], scratchpad=True)
    tok = CharTokenizer()
    config = RunConfig(model=ModelConfig(n_layer=1, d_model=32, n_head=2, context=128), train=TrainConfig(steps=1))
    model = model_from_config(config)
    model.init_weights(0)
    save_model_checkpoint(d / "algebra-ckpt", model, tok, config, step=0, trainer_state={})
    manifest = export_web(d / "algebra-ckpt", d / "model" / "algebra", examples=64, demo_prompts=2,
                          data_dir=d / "algebra-data")
    longest = max(len(tok.encode(e["answer"])) + 1 for e in manifest["examples"])
    assert longest * 1.25 > 32  # the case this test is about
    page = open_page(browser, url + "?model=/model/algebra/")
    assert page["error"] == ""
    assert browser.evaluate("document.getElementById('maxtokens').value") == str(min(128, math.ceil(longest * 1.25)))
