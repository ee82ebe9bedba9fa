"""ODIN in the browser: the WebAssembly build, the web export of a checkpoint, a static server.

* :mod:`odin.web.build`   — ``odin wasm build``: compiles csrc/ to web/wasm/odin-*.wasm
* :mod:`odin.web.export`  — ``odin export web CHECKPOINT OUT/``: weights + config + tokenizer
* :mod:`odin.web.serve`   — ``odin serve-web``: the demo page on localhost
* :mod:`odin.web.wasmrt`  — the module under ``wasmtime`` from Python (tests, benchmarks)
* :mod:`odin.web.cli`     — ``register(subparsers)`` adds the three sub-commands to ``odin``

The JavaScript runtime and the demo page live in ``web/`` (docs/wasm.md).
"""
