"""The ``odin export <format>`` and ``odin import <format>`` rows of the interchange formats.

odin/web/cli.py owns the ``export`` parser (``odin export web``); :func:`register_export`
adds the interchange formats to it and :func:`register_import` adds ``odin import``. Each
format module contributes ``add_export_parser(export_subparsers)`` and/or
``add_import_parser(import_subparsers)``; a format is listed below once its module exists.
"""
from __future__ import annotations

import argparse
import importlib

# modules under odin.interchange, in the order their rows appear in --help
EXPORT_FORMATS: tuple[str, ...] = ("hf", "gguf_format", "onnx_export")
IMPORT_FORMATS: tuple[str, ...] = ("hf", "gguf_format")


def register_export(export_subparsers: "argparse._SubParsersAction") -> None:
    for name in EXPORT_FORMATS:
        importlib.import_module(f"odin.interchange.{name}").add_export_parser(export_subparsers)


def register_import(subparsers: "argparse._SubParsersAction") -> None:
    if not IMPORT_FORMATS:
        return
    i = subparsers.add_parser("import", help="turn another tool's model into an ODIN checkpoint")
    isub = i.add_subparsers(dest="import_command", required=True)
    for name in IMPORT_FORMATS:
        importlib.import_module(f"odin.interchange.{name}").add_import_parser(isub)
