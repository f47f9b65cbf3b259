"""The explorer over HTTP: routes, size and origin checks, JSON in and out, the static page.

The standard library's ThreadingHTTPServer, no web framework: the project's dependencies have
none, the page must work offline, and the model work is serialised in session.py anyway, so a
framework's workers would buy nothing. Each request runs on its own thread; only session.py's
lock decides who uses the model.

It binds 127.0.0.1 and nothing else, and answers only requests that name it as their Host (and
Origin, when a browser sends one): another web page the user has open cannot drive the model or
read uploads, even through DNS rebinding. Every refusal is a 4xx with {"error": "<one line>"}.
"""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .session import ApiError, Explorer

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
STATIC = Path(__file__).resolve().parent / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml", ".json": "application/json"}
MAX_JSON_BYTES = 2**16  # a request body other than an upload: a few fields
STATIC_NAME = re.compile(r"[\w-]+(\.[\w-]+)*")  # no slashes, no leading dot: nothing outside STATIC
MEDIA_PNG = re.compile(r"/api/media/(\w+)\.png")
MASK_PNG = re.compile(r"/api/mask/(\w+)\.png")


def make_server(explorer: Explorer, port: int = 0) -> ThreadingHTTPServer:
    """A server on 127.0.0.1:`port` (0: a free one, read back from server_address), not yet serving."""
    try:
        server = ThreadingHTTPServer((HOST, port), Handler)
    except OSError as e:  # the port taken, mostly: a value the user picks again
        raise ValueError(f"port {port} on {HOST}: {e.strerror}; pick another with --port N, or --port 0 for a free "
                         "one") from None
    server.daemon_threads = True  # a request in flight does not keep Ctrl-C from stopping the server
    server.explorer = explorer
    return server


def serve(explorer: Explorer, port: int = 8000) -> None:
    """Serve until interrupted, after printing where."""
    server = make_server(explorer, port)
    host, port = server.server_address[:2]
    print(f"git-scratch explore: {explorer.name} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


class Handler(BaseHTTPRequestHandler):
    server_version = "git-scratch-explore"

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self.respond(self.get)

    def do_POST(self) -> None:  # noqa: N802
        self.respond(self.post)

    def get(self, path: str) -> tuple[str, bytes]:
        explorer: Explorer = self.server.explorer
        if path == "/":
            return static("index.html")
        if path.startswith("/static/"):
            return static(path.removeprefix("/static/"))
        if path == "/api/info":
            return as_json(explorer.info())
        if match := MEDIA_PNG.fullmatch(path):
            frame = parse_qs(urlsplit(self.path).query).get("frame", ["0"])[0]
            if not frame.isdigit():
                raise ApiError(f"frame={frame!r} must be a frame number from 0; drop it for the first frame")
            return "image/png", explorer.preview(match[1], int(frame))
        if match := MASK_PNG.fullmatch(path):
            return "image/png", explorer.mask_png(match[1])
        raise ApiError(f"GET {path} is not a page of the explorer; docs/explore.md lists them", status=404)

    def post(self, path: str) -> tuple[str, bytes]:
        explorer: Explorer = self.server.explorer
        if path == "/api/upload":
            name = unquote(self.headers.get("X-Filename", "upload"))
            return as_json(explorer.upload(self.body(explorer.max_upload_bytes), name))
        operations = {"/api/caption": (explorer.caption, {"media_id"}, {"num_beams", "max_new_tokens"}),
                      "/api/answer": (explorer.answer, {"media_id", "question"}, {"max_new_tokens"}),
                      "/api/attention": (explorer.attention, {"sequence_id", "token", "layer"}, {"head", "frame"}),
                      "/api/parity": (explorer.parity, {"media_id"}, set())}
        if path not in operations:
            raise ApiError(f"POST {path} is not an operation of the explorer; docs/explore.md lists them", status=404)
        operation, required, optional = operations[path]
        return as_json(operation(**fields(self.body(MAX_JSON_BYTES), required, optional)))

    def body(self, limit: int) -> bytes:
        """The request body, refused before a byte of it is read when its declared length is over `limit`."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError("the request has no Content-Length; send the body whole, with its length", status=411)
        if int(length) > limit:
            self.close_connection = True  # the unread body must not be taken for the next request
            raise ApiError(f"the request body is {length} bytes, over the limit of {limit}; send a smaller file",
                           status=413)
        return self.rfile.read(int(length))

    def check_origin(self) -> None:
        """Refuse a request that comes from somewhere other than this server's own page."""
        port = self.server.server_address[1]
        ours = {f"{HOST}:{port}", f"localhost:{port}"}
        if self.headers.get("Host") not in ours:
            raise ApiError(f"Host {self.headers.get('Host')!r} is not this server; open http://{HOST}:{port}/",
                           status=403)
        origin = self.headers.get("Origin")
        if origin is not None and origin.removeprefix("http://") not in ours:
            raise ApiError(f"Origin {origin!r} is another site; the explorer answers only its own page", status=403)

    def respond(self, route: Any) -> None:
        path = urlsplit(self.path).path
        try:
            self.check_origin()
            status, (kind, payload) = HTTPStatus.OK, route(path)
        except ApiError as e:
            status, (kind, payload) = e.status, as_json({"error": one_line(e)})
        except (ValueError, OSError) as e:  # the library's one-line refusals: a prompt too long, ...
            status, (kind, payload) = HTTPStatus.BAD_REQUEST, as_json({"error": one_line(e)})
        except Exception as e:  # a bug: the page gets one line, the terminal the traceback
            log.exception("%s %s", self.command, path)
            status, kind, payload = HTTPStatus.INTERNAL_SERVER_ERROR, *as_json(
                {"error": f"internal error ({type(e).__name__}: {one_line(e)}); the terminal running "
                          "git-scratch explore has the traceback"})
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.info("%s " + format, self.address_string(), *args)


def fields(body: bytes, required: set[str], optional: set[str]) -> dict[str, Any]:
    """A JSON object with every required field, and no field the operation does not take."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(f"the request body is not JSON ({e}); send an object such as "
                            '{"media_id": "..."}') from None
    if not isinstance(data, dict):
        raise ApiError(f"the request body is {type(data).__name__} JSON; send an object of named fields")
    missing, unknown = sorted(required - data.keys()), sorted(data.keys() - required - optional)
    if missing or unknown:
        raise ApiError(f"fields missing: {missing}, fields unknown: {unknown}; this operation takes "
                            f"{sorted(required)} and optionally {sorted(optional)}")
    return data


def static(name: str) -> tuple[str, bytes]:
    path = STATIC / name
    if not STATIC_NAME.fullmatch(name) or path.suffix not in TYPES or not path.is_file():
        raise ApiError(f"{name} is not a file of the explorer's page; reinstall git-scratch if index.html "
                            "is missing", status=404)
    return TYPES[path.suffix], path.read_bytes()


def as_json(data: Any) -> tuple[str, bytes]:
    return "application/json", json.dumps(data, ensure_ascii=False, allow_nan=False).encode()


def one_line(error: BaseException) -> str:
    """cli/common.py's, which this room's rank cannot import."""
    return " ".join(str(error).splitlines()) or type(error).__name__
