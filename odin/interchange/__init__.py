"""Interchange: ODIN checkpoints to and from the ecosystem's formats (Hugging Face
directories, GGUF for llama.cpp, ONNX). One module per format; the command-line rows
live in :mod:`odin.interchange.cli`."""
