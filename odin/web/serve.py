"""``odin serve-web``: the demo page, the JS runtime, the wasm module and an exported model
over HTTP on localhost (Python's http.server; static files only, nothing is executed).

    /            -> the web directory (index.html, odin.js, wasm/: the package's odin/web/static,
                    which is web/ of a source checkout)
    /model/...   -> the exported model directory (``--model DIR``; default ./web/model/, the
                    README's ``odin export web CHECKPOINT web/model``, else web/model/ of the checkout)

The web runtime needs a real origin (fetch and ES modules do not work from file://) and
``application/wasm`` for streaming compilation; both come from here. Bound to 127.0.0.1 by
default: it is a development server, not something to expose.
"""
from __future__ import annotations

import http.server
import os
import posixpath
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Optional

from odin.web.build import WEB

TYPES = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
         ".json": "application/json", ".bin": "application/octet-stream", ".html": "text/html; charset=utf-8",
         ".css": "text/css", ".svg": "image/svg+xml"}


def default_model_dir() -> Optional[Path]:
    """./web/model (where the README exports to, from any folder), else the checkout's web/model."""
    for candidate in (Path("web") / "model", WEB / "model"):
        if (candidate / "model.json").is_file():
            return candidate
    return None


class _Handler(http.server.SimpleHTTPRequestHandler):
    web_dir: Path
    model_dir: Optional[Path]
    quiet: bool = False

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def translate_path(self, path: str) -> str:
        parsed = urllib.parse.urlsplit(path).path
        parsed = posixpath.normpath(urllib.parse.unquote(parsed))
        parts = [p for p in parsed.split("/") if p and p not in (".", "..")]
        if parts and parts[0] == "model" and self.model_dir is not None:
            base, parts = self.model_dir, parts[1:]
        else:
            base = self.web_dir
        return str(base.joinpath(*parts)) if parts else str(base)

    def end_headers(self) -> None:
        # the page, the runtime and the model manifest change while developing; the weights
        # are cached by the runtime itself (IndexedDB, keyed by their sha256)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        if not self.quiet:
            super().log_message(format, *args)


def make_server(host: str = "127.0.0.1", port: int = 8000, *, web_dir: Path = WEB,
                model_dir: Optional[Path] = None, quiet: bool = False) -> http.server.ThreadingHTTPServer:
    """A ready server (not yet serving); port 0 picks a free port (server.server_address[1])."""
    web_dir = Path(web_dir).resolve()
    if not (web_dir / "index.html").is_file():
        raise FileNotFoundError(f"{web_dir} has no index.html: pass --web DIR (the web/ directory of ODIN)")
    if model_dir is None:
        model_dir = default_model_dir()
    if model_dir is not None:
        model_dir = Path(model_dir).resolve()
        if not (model_dir / "model.json").is_file():
            raise FileNotFoundError(f"{model_dir} has no model.json: create it with `odin export web CHECKPOINT {model_dir}`")
    handler = type("OdinWebHandler", (_Handler,), {"web_dir": web_dir, "model_dir": model_dir, "quiet": quiet})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(**kwargs) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Start a server on a background thread; returns (server, base URL). server.shutdown() stops it."""
    server = make_server(**{"port": 0, "quiet": True, **kwargs})
    threading.Thread(target=server.serve_forever, name="odin-serve-web", daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}/"


def serve(host: str = "127.0.0.1", port: int = 8000, *, web_dir: Path = WEB, model_dir: Optional[Path] = None,
          quiet: bool = False) -> int:
    try:
        server = make_server(host, port, web_dir=web_dir, model_dir=model_dir, quiet=quiet)
    except (FileNotFoundError, OSError) as error:
        print(f"odin serve-web: error: {error}", file=sys.stderr)
        return 2
    bound_host, bound_port = server.server_address[:2]
    model = server.RequestHandlerClass.model_dir
    print(f"ODIN web demo on http://{bound_host}:{bound_port}/  (web: {server.RequestHandlerClass.web_dir}; "
          f"model: {model or 'none — export one with `odin export web CHECKPOINT web/model`'})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":  # python -m odin.web.serve [port]
    sys.exit(serve(port=int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8000"))))
