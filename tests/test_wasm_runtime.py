"""The pieces around the wasm kernels: the build (artifacts up to date, exports = odin.h),
the module's own allocator, the `odin wasm build` / `odin export web` / `odin serve-web`
sub-commands, and what serve-web sends a browser."""
from __future__ import annotations

import argparse
import json
import urllib.request

import numpy as np
import pytest

from odin.web import build
from wasm_support import HAVE_WASMTIME, tiny_arith_model, wasm_path


def test_committed_artifacts_are_up_to_date():
    """web/wasm/ must be rebuilt (python tools/build_wasm.py) whenever csrc/ changes."""
    for variant in build.VARIANTS:
        ok, reason = build.artifact_status(build.DEFAULT_OUT, variant)
        assert ok, reason


def test_exports_follow_odin_h(tmp_path_factory):
    names = build.exported_functions()
    assert "odin_gpt_forward" in names and "odin_matmul_backward" in names and "odin_sample" in names
    assert "odin_rwkv_forward" in names and "odin_rwkv_decode" in names
    assert not [n for n in names if n.startswith("odin_spheres")]
    if not HAVE_WASMTIME:
        pytest.skip("wasmtime is not installed")
    from odin.web.wasmrt import WasmOdin

    for variant in build.VARIANTS:
        rt = WasmOdin(wasm_path(variant, tmp_path_factory))
        extra = build.wasm_only_exports()
        assert {"malloc", "free", "odin_wasm_reserve", "odin_wasm_gpt_train_step", "odin_wasm_rwkv_train_step"} <= set(extra)
        missing = [n for n in names + extra if not rt.has(n)]
        assert not missing, f"{variant}: not exported: {missing}"
        assert not rt.has("odin_spheres_create")
        assert rt.simd() == (variant == "simd128")


def test_allocator_stress(tmp_path_factory):
    """Random malloc / aligned_alloc / free: no overlap, contents intact, freed memory reused."""
    if not HAVE_WASMTIME:
        pytest.skip("wasmtime is not installed")
    from odin.web.wasmrt import WasmOdin

    rt = WasmOdin(wasm_path("simd128", tmp_path_factory))
    rng = np.random.default_rng(0)
    live: dict[int, tuple[int, int]] = {}
    # aligned_alloc is not exported: reach it through odin_gpt_create's 64-byte blocks below
    for i in range(3000):
        if live and rng.random() < 0.45:
            p = list(live)[rng.integers(len(live))]
            n, tag = live.pop(p)
            assert (rt.view(p, n, np.uint8) == tag).all(), "a block's contents changed"
            rt.free(p)
            continue
        n = int(rng.choice([1, 7, 16, 100, 4096, 70000, 1 << 20]))
        p = rt.malloc(n)
        assert p % 16 == 0
        for q, (m, _) in live.items():
            assert p + n <= q or q + m <= p, "overlapping blocks"
        tag = i % 251
        rt.view(p, n, np.uint8)[:] = tag
        live[p] = (n, tag)
    # pages grown by someone else (here: the host) are never handed out
    base = rt.memory_bytes()
    rt.memory.grow(rt.store, 2)
    foreign = (base, base + 2 * 65536)
    rt.bytes_view()[foreign[0]:foreign[1]] = 77
    for n in (1 << 20, 3 << 20, 100):
        p = rt.malloc(n)
        assert p + n <= foreign[0] or p >= foreign[1]
        rt.view(p, n, np.uint8)[:] = 1
        live[p] = (n, 1)
    assert (rt.bytes_view()[foreign[0]:foreign[1]] == 77).all()
    for p, (n, tag) in live.items():
        assert (rt.view(p, n, np.uint8) == tag).all()
        rt.free(p)
    used = rt.memory_bytes()
    # everything is free again: the same mix fits without growing the memory
    ptrs = [rt.malloc(1 << 20) for _ in range(3)]
    assert rt.memory_bytes() == used
    for p in ptrs:
        rt.free(p)
    assert rt.fn("odin_wasm_heap_in_use")() == 0
    # reserve grows once (by what the free pool lacks), then model blocks (aligned_alloc(64))
    # come out of it
    assert rt.fn("odin_wasm_reserve")(float(60 * 2**20)) >= 60 * 2**20
    grown = rt.memory_bytes()
    assert grown < used + 60 * 2**20
    from odin.web.wasmrt import WasmGPT

    g = WasmGPT(rt, vocab_size=102, context=64, n_layer=4, n_head=4, d_model=128)
    assert rt.memory_bytes() == grown
    assert int(rt.fn("odin_gpt_params")(g.h)) % 64 == 0
    g.close()


def parser():
    from odin.web.cli import register

    p = argparse.ArgumentParser(prog="odin")
    register(p.add_subparsers(dest="command", required=True))
    return p


def test_cli_parses_the_three_commands(tmp_path):
    p = parser()
    a = p.parse_args(["wasm", "build", "--variant", "scalar", "--if-stale"])
    assert a.variant == ["scalar"] and a.if_stale and callable(a.func)
    a = p.parse_args(["export", "web", "ckpt", str(tmp_path), "--examples", "10"])
    assert (a.checkpoint, a.out, a.examples) == ("ckpt", str(tmp_path), 10)
    a = p.parse_args(["serve-web", "--port", "0", "--model", str(tmp_path)])
    assert a.port == 0 and a.model == tmp_path and a.host == "127.0.0.1"
    with pytest.raises(SystemExit):
        p.parse_args(["export", "tflite", "x", "y"])  # a format ODIN does not write


def test_wasm_build_if_stale_is_a_no_op_when_fresh(capsys):
    if not all(build.artifact_status(build.DEFAULT_OUT, v)[0] for v in build.VARIANTS):
        pytest.skip("web/wasm is stale")
    a = parser().parse_args(["wasm", "build", "--if-stale"])
    assert a.func(a) == 0
    assert "up to date" in capsys.readouterr().out


def test_export_and_serve(tmp_path):
    from odin.checkpoint import save_model_checkpoint
    from odin.web.export import load_export
    from odin.web.serve import serve_in_thread

    model, config, tok, examples = tiny_arith_model()
    save_model_checkpoint(tmp_path / "ckpt", model, tok, config, step=300, trainer_state={})
    a = parser().parse_args(["export", "web", str(tmp_path / "ckpt"), str(tmp_path / "web"), "--examples", "0"])
    assert a.func(a) == 0
    manifest, weights = load_export(tmp_path / "web")
    assert manifest["format"] == "odin-web" and manifest["n_params"] == model.n_params
    assert np.array_equal(weights, model.params)
    assert [t["name"] for t in manifest["tensors"]] == [n for n, _, _ in model.tensor_layout]
    assert manifest["task"] is None and manifest["examples"] == [] and manifest["abacus"] is None
    assert manifest["tokenizer"]["odin_kind"] == "char" and manifest["special"] == {"pad": 0, "bos": 1, "end": 2}
    # a bad checkpoint is a one-line error and exit status 2
    bad = parser().parse_args(["export", "web", str(tmp_path / "nope"), str(tmp_path / "w2")])
    assert bad.func(bad) == 2

    server, url = serve_in_thread(model_dir=tmp_path / "web")
    try:
        def get(path):
            with urllib.request.urlopen(url + path, timeout=10) as r:
                return r.headers.get("Content-Type"), r.read()

        ctype, body = get("")
        assert ctype.startswith("text/html") and b"odinDemo" not in body and b"demo.js" in body
        assert get("odin.js")[0] == "text/javascript"
        ctype, body = get("wasm/odin-simd128.wasm")
        assert ctype == "application/wasm" and body[:4] == b"\0asm"
        ctype, body = get("model/model.json")
        assert ctype == "application/json" and json.loads(body)["n_params"] == model.n_params
        assert get("model/weights.bin?v=123")[1] == (tmp_path / "web" / "weights.bin").read_bytes()
        with pytest.raises(urllib.error.HTTPError):
            get("model/../../ckpt/config.json")
    finally:
        server.shutdown()
        server.server_close()
