"""The web sub-commands of ``odin``; odin/cli.py calls :func:`register` on its sub-parsers.

    odin wasm build [--out DIR] [--variant simd128|scalar] [--cc zig|clang] [--if-stale]
    odin export web CHECKPOINT OUT/ [--quant q8_0|q4_0|q4_1|q5_0|q5_1] [--examples N] [--demo-prompts N] [--data DIR]
    odin serve-web [--port 8000] [--host 127.0.0.1] [--model DIR] [--web DIR]

Each parser sets ``func`` (a callable taking the parsed namespace and returning an exit
status), as the other ``odin`` commands do. Errors a user can fix print one line and
return 2; a failed wasm build returns 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_wasm_build(args: argparse.Namespace) -> int:
    from odin.web.build import run_from_args

    return run_from_args(args)


def _cmd_export_web(args: argparse.Namespace) -> int:
    from odin.web.export import ExportError, export_web

    try:
        manifest = export_web(args.checkpoint, args.out, examples=args.examples, demo_prompts=args.demo_prompts,
                              seed=args.seed, data_dir=args.data, quant=args.quant)
    except (ExportError, OSError) as error:
        print(f"odin export web: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    mib = manifest["weights"]["bytes"] / 2**20
    task = manifest["task"]["kind"] if manifest["task"] else "none"
    q = manifest["quant"]
    weights = (f"{q['matrix']}, embedding {q['embed']}, {q['source']}" if q else "float32")
    print(f"exported {manifest['n_params']:,} parameters ({mib:.2f} MiB, {weights}) to {out / 'weights.bin'} and "
          f"{out / 'model.json'} (tokenizer: {manifest['tokenizer'].get('odin_kind', 'bpe')}, task: {task}, "
          f"{len(manifest['examples'])} training examples)")
    print(f"serve it:  odin serve-web --model {out}")
    return 0


def _cmd_serve_web(args: argparse.Namespace) -> int:
    from odin.web.serve import serve

    return serve(args.host, args.port, web_dir=args.web, model_dir=args.model, quiet=args.quiet)


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add ``wasm``, ``export`` and ``serve-web`` to an ``odin`` sub-parser set."""
    from odin.web.build import WEB, add_arguments

    w = subparsers.add_parser("wasm", help="the WebAssembly build of the engine")
    wsub = w.add_subparsers(dest="wasm_command", required=True)
    wb = wsub.add_parser("build", help="compile csrc/ to web/wasm/odin-simd128.wasm and odin-scalar.wasm "
                                       "(needs: pip install ziglang)")
    add_arguments(wb)
    wb.set_defaults(func=_cmd_wasm_build)

    e = subparsers.add_parser("export", help="export a checkpoint for another runtime")
    esub = e.add_subparsers(dest="export_command", required=True)
    ew = esub.add_parser("web", help="weights.bin + model.json for the browser runtime (web/odin.js)")
    ew.add_argument("checkpoint", help="checkpoint directory (model.safetensors, config.json, tokenizer.json)")
    ew.add_argument("out", help="output directory (e.g. web/model)")
    ew.add_argument("--quant", default=None, metavar="TYPE",
                    help="weights in a llama.cpp block format: q8_0, q4_0, q4_1, q5_0 or q5_1 (the matrices; the "
                         "token embedding q8_0, vectors float32); default: as the checkpoint holds them")
    ew.add_argument("--examples", type=int, default=1024,
                    help="training examples to include for in-page training (default 1024)")
    ew.add_argument("--demo-prompts", type=int, default=8, help="test prompts to offer on the demo page (default 8)")
    ew.add_argument("--data", default=None, help="dataset directory (default: the one the run trained on)")
    ew.add_argument("--seed", type=int, default=0, help="seed for picking the examples")
    ew.set_defaults(func=_cmd_export_web)
    from odin.interchange.cli import register_export, register_import

    register_export(esub)  # odin export hf | gguf | onnx
    register_import(subparsers)  # odin import hf | gguf

    s = subparsers.add_parser("serve-web", help="serve the browser demo on localhost")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    s.add_argument("--model", type=Path, default=None, help="exported model directory (default: web/model)")
    s.add_argument("--web", type=Path, default=WEB, help=f"web directory (default: {WEB})")
    s.add_argument("--quiet", action="store_true", help="no request log")
    s.set_defaults(func=_cmd_serve_web)


def main(argv=None) -> int:
    """Standalone entry point (``python -m odin.web.cli ...``) until odin/cli.py registers these."""
    parser = argparse.ArgumentParser(prog="odin")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
