"""`odin quantize CHECKPOINT OUT --type TYPE [--embed TYPE] [--overwrite]`: a float32
checkpoint as a quantized checkpoint folder (odin.quant.checkpoint.quantize_checkpoint).

Errors (an unknown type, a row that is not whole blocks, a checkpoint quantized already, a
damaged file, an OUT that exists) are one line from odin.cli's handler, exit status 2,
before OUT is touched."""
from __future__ import annotations

import argparse


def _cmd_quantize(args: argparse.Namespace) -> int:
    from odin.quant.checkpoint import quantize_checkpoint

    print(quantize_checkpoint(args.checkpoint, args.out, args.type, args.embed, overwrite=args.overwrite).summary())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from odin.quant.formats import DEFAULT_EMBED_TYPE, QUANT_TYPES

    types = "|".join(QUANT_TYPES)
    q = sub.add_parser("quantize", help="a float32 checkpoint as a quantized one (llama.cpp's block formats)",
                       description="Write the float32 checkpoint CHECKPOINT (a checkpoint, run or pipeline folder) "
                                   "as a quantized checkpoint folder OUT for odin-infer, odin eval, odin model info "
                                   "and the dashboard chat (docs/quantization.md).")
    q.add_argument("checkpoint", help="the float32 checkpoint (its folder, its run folder, its model.safetensors)")
    q.add_argument("out", help="the quantized checkpoint folder to write (refused if it exists, unless --overwrite)")
    q.add_argument("--type", required=True, metavar="TYPE", help=f"the matrices' block type: {types}")
    q.add_argument("--embed", default=None, metavar="TYPE",
                   help=f"the token embedding's (the tied head's) type: {types} or f32 (default {DEFAULT_EMBED_TYPE})")
    q.add_argument("--overwrite", action="store_true", help="replace OUT when it holds a checkpoint")
    q.set_defaults(func=_cmd_quantize)
