"""The web app: a JSON API over loaded models and the page at ``/``, on Starlette.

    import charrnn
    web = charrnn.app(["checkpoints/shakespeare"])        # an ASGI app, to mount anywhere
    charrnn.serve(["checkpoints/shakespeare"], port=8000)  # or run it with uvicorn

Endpoints (JSON in and out; an error is ``{"error": {"field": ..., "message": ...}}`` with a
4xx status that names the field):
- ``GET /v1/models``: each model's name and what ``charrnn info --json`` says; the limits.
- ``POST /v1/sample``: prompt, length, temperature, top_k, top_p, seed, stop, n, unknown, model,
  and for records models label and novel; ``"stream": true`` answers with server-sent events (``data: {"index", "text"}`` per piece,
  then ``event: done``). The same seed gives the same text as ``charrnn sample``.
- ``POST /v1/score``: text, per_line, unknown, model: loss (nats/token), bits/char, perplexity.
- ``POST /v1/next``: the ``k`` likeliest next tokens after a prompt, with their probabilities.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charrnn.errors import CharrnnError, UsageError
from charrnn.server import require

require()

from starlette.applications import Starlette  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402
from starlette.staticfiles import StaticFiles  # noqa: E402

from charrnn.api import CharRNN, load, resolve_seed  # noqa: E402
from charrnn.evaluate import split_lines  # noqa: E402

# The page is the web export's: with no model in its weights.js (NO_WEIGHTS, here) it talks to
# this API; an export's weights.js makes it run the model in the browser instead.
from charrnn.export.web import WEB  # noqa: E402
from charrnn.server.requests import FieldError, Limits, parse_next, parse_sample, parse_score  # noqa: E402
from charrnn.server.worker import Busy, Worker  # noqa: E402

NO_WEIGHTS = b"// charrnn serve: no weights here; the page samples through the HTTP API (/v1).\n"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1"]


class JSON(JSONResponse):
    """JSON that every client can decode: ASCII, with escapes (a lone surrogate in a prompt or a
    field name goes out as its escape, never as bytes that UTF-8 cannot hold)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class HostCheck:
    """Answer only requests whose Host header names one of ``allowed`` (any port); others get a
    400 JSON error, as every other refusal."""

    def __init__(self, app, allowed: list[str]):
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").strip().lower()
            name = (
                host[: host.find("]") + 1]
                if host.startswith("[")
                else host.rsplit(":", 1)[0]
                if host.count(":") == 1
                else host
            )
            if name not in self.allowed:
                message = f"this server answers only {', '.join(sorted(self.allowed))} in the Host header, not {host!r}"
                await JSON(FieldError(None, message, 400).to_dict(), status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or name (127.0.0.0/8, ::1, localhost): a server there
    answers only loopback Host names, so that a web page elsewhere cannot reach it through a
    rebound DNS name."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Served:
    """A model being served: its name, the loaded model, and what /v1/models says of it."""

    name: str
    model: CharRNN
    info: dict[str, Any]
    score_lock: threading.Lock = field(default_factory=threading.Lock)


def app(
    models: CharRNN | str | Path | Iterable[CharRNN | str | Path] | Mapping[str, CharRNN | str | Path] | None = None,
    limits: Limits | None = None,
    *,
    device: str = "cpu",
    precision: str = "auto",
    allowed_hosts: list[str] | None = None,
) -> Starlette:
    """The ASGI app over ``models``: loaded ``CharRNN``s or checkpoints (a .pt file, a run folder;
    None: the newest best.pt under ./checkpoints), as a list (named after their run folders) or a
    dict of names; the first is the default. Every model is loaded and warmed up here, once, and
    shared by all requests. ``limits``: the most a request may ask for. ``allowed_hosts``: the Host
    headers answered (others get 400); ``serve`` passes the loopback names when it listens there,
    so that a web page elsewhere cannot reach the API through a rebound DNS name.
    Raises CharrnnError for a checkpoint that cannot be loaded."""
    limits = limits or Limits()
    served = _load_all(models, device, precision)
    worker = Worker(limits.max_jobs)
    default = next(iter(served))

    def pick(name: str | None) -> Served:
        if name is None:
            return served[default]
        if name not in served:
            raise FieldError("model", f"no model named {name!r}; the models are: {', '.join(served)}")
        return served[name]

    async def index(request: Request) -> Response:
        return FileResponse(WEB / "index.html")

    async def library(request: Request) -> Response:
        return FileResponse(WEB / "charrnn.js", media_type="text/javascript")

    async def no_weights(request: Request) -> Response:
        return Response(NO_WEIGHTS, media_type="text/javascript")

    async def models_route(request: Request) -> Response:
        return JSON(
            {
                "models": [
                    {
                        "name": s.name,
                        "default": s.name == default,
                        "records": s.model.is_records,
                        "labels": s.model.labels,
                        **s.info,
                    }
                    for s in served.values()
                ],
                "limits": limits.to_dict(),
            }
        )

    async def sample(request: Request) -> Response:
        req = parse_sample(await _json(request, limits), limits)
        s = pick(req.model)
        _check_label(s.model, req.label)
        seed = resolve_seed(req.seed)
        options = dict(top_k=req.top_k, top_p=req.top_p, seed=seed, stop=req.stop, unknown=req.unknown, label=req.label)
        head = {"model": s.name, "seed": seed}
        if req.novel or s.model.is_records:
            # Curated samples (copies, and empty records, dropped) are drawn in rounds until enough
            # are kept: one call, answered whole, with how many were drawn and dropped.
            def drawn() -> Iterator[list[str]]:
                d = _field_errors(
                    s.model.draw,
                    "prompt",
                    req.n,
                    req.prompt,
                    req.length,
                    (req.temperature,),
                    novel=req.novel,
                    **options,
                )
                head["summary"] = d.summary
                yield [x.text for x in d.samples]

            job = _submit(worker, drawn)
        else:
            job = _submit(
                worker,
                lambda: _field_errors(
                    s.model.generate, "prompt", req.prompt, req.length, req.temperature, n=req.n, shared=True, **options
                ),
            )
        pieces = job.__aiter__()
        first = await _first(pieces)  # a prompt the model cannot encode fails here, before any answer
        if req.stream:
            return StreamingResponse(
                _events(first, pieces, head),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            )
        texts = list(first)
        async for chunk in pieces:
            texts = [t + p for t, p in zip(texts, chunk)]
        return JSON({**head, "samples": [{"index": i, "text": t} for i, t in enumerate(texts)]})

    async def score(request: Request) -> Response:
        req = parse_score(await _json(request, limits), limits)
        s = pick(req.model)

        def run() -> Any:
            with s.score_lock:  # one scoring per model at a time; scoring uses torch, never the kernel
                if req.per_line:
                    return {"lines": [r.to_dict() for r in s.model.score_lines(split_lines(req.text), req.unknown)]}
                return s.model.score(req.text, req.unknown).to_dict()

        result = await run_in_threadpool(_field_errors, run, "text")
        return JSON({"model": s.name, **result})

    async def next_tokens(request: Request) -> Response:
        req = parse_next(await _json(request, limits), limits)
        s = pick(req.model)
        try:
            _check_label(s.model, req.label)
            top = await worker.call(
                lambda: _field_errors(
                    s.model.next_token_probs, "prompt", req.prompt, req.k, req.temperature, req.unknown, req.label
                )
            )
        except Busy as e:
            raise FieldError(None, str(e), 503) from None
        return JSON({"model": s.name, "tokens": [{"token": t, "p": p} for t, p in top]})

    routes = [
        Route("/", index),
        Route("/v1/models", models_route),
        Route("/v1/sample", sample, methods=["POST"]),
        Route("/v1/score", score, methods=["POST"]),
        Route("/v1/next", next_tokens, methods=["POST"]),
        Route("/charrnn.js", library),
        Route("/weights.js", no_weights),
        Mount("/static", StaticFiles(directory=WEB / "static"), name="static"),
    ]
    middleware = [Middleware(HostCheck, allowed=allowed_hosts)] if allowed_hosts else []
    web = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            FieldError: _field_error,
            HTTPException: _http_error,
        },
        lifespan=_closing(worker),
    )
    web.state.models, web.state.limits, web.state.worker = served, limits, worker
    return web


def _closing(worker: Worker):
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        worker.close()

    return lifespan


def serve(
    models: Any = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    *,
    device: str = "cpu",
    precision: str = "auto",
    announce=None,
) -> None:
    """Serve ``models`` (as ``app`` takes them) at http://host:port until interrupted. Localhost
    by default: any other address lets every machine that reaches it use the models. Port 0
    picks a free port. ``announce(url)`` is called once it listens. Raises CharrnnError when
    it cannot listen there or a checkpoint cannot be loaded."""
    import socket

    import uvicorn

    web = app(
        models,
        limits,
        device=device,
        precision=precision,
        allowed_hosts=LOOPBACK_HOSTS + ["[::1]", host] if is_loopback(host) else None,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port or --host"
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    server = uvicorn.Server(uvicorn.Config(web, log_level="warning", access_log=False, timeout_graceful_shutdown=1))
    if announce is not None:
        announce(f"http://{shown}:{bound}/")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _load_all(models: Any, device: str, precision: str) -> dict[str, Served]:
    if models is None or isinstance(models, (CharRNN, str, Path)):
        models = [models]
    named = list(models.items()) if isinstance(models, Mapping) else [(None, m) for m in models]
    if not named:
        raise UsageError("no model to serve: give at least one checkpoint")
    served: dict[str, Served] = {}
    for name, m in named:
        model = m if isinstance(m, CharRNN) else load(m, device, precision)
        name = name or _name(model, served)
        model.sample("", length=1, seed=0)  # builds the kernel and packs now, not in the first request
        list(model.generate("", length=1, seed=0, shared=True))  # and the kernel that requests share
        info = dict(model.info)
        served[name] = Served(name, model, info)
    return served


def _name(model: CharRNN, taken: Mapping[str, Any]) -> str:
    """The run folder's name (a .pt file's own stem outside a run folder), made unique."""
    path = model.path
    base = "model" if path is None else (path.parent.name if path.stem in ("best", "last") else path.stem)
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


async def _json(request: Request, limits: Limits) -> Any:
    """The body as JSON: application/json, at most ``limits.max_body`` bytes."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        # Also what keeps other web sites off: a browser sends them only after a preflight we never allow.
        raise FieldError(
            None, f"send the body as JSON with Content-Type: application/json, not {kind or 'none'!r}", 415
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body:
        raise FieldError(None, f"the body is {declared} bytes; the limit is {limits.max_body} (--max-body)", 413)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limits.max_body:
            raise FieldError(None, f"the body is over {limits.max_body} bytes, the limit (--max-body)", 413)
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise FieldError(None, "the body is not UTF-8", 400) from None
    except json.JSONDecodeError as e:
        raise FieldError(None, f"the body is not JSON: {e}", 400) from None
    except RecursionError:
        raise FieldError(None, "the body nests arrays or objects too deeply", 400) from None
    except ValueError as e:  # Python's limit on the digits of an integer (4300)
        raise FieldError(None, f"the body holds a number too long to read: {e}", 400) from None


def _check_label(model: CharRNN, label: str | None) -> None:
    if label is None:
        return
    if not model.is_records or not model.labels:
        raise FieldError("label", "label needs a records model trained with --label-field; this one has no labels")
    if label not in model.labels:
        raise FieldError("label", f"no label {label!r}; the labels are: {', '.join(model.labels)}")


def _submit(worker: Worker, start):
    try:
        return worker.submit(start)
    except Busy as e:
        raise FieldError(None, f"{e}; try again shortly", 503) from None


def _field_errors(fn, name: str, *args, **kwargs):
    """``fn(*args, **kwargs)``, with a user's error (an unseen prompt token, too short a text) as a
    FieldError that names ``name``."""
    try:
        return fn(*args, **kwargs)
    except CharrnnError as e:
        raise FieldError(name, str(e)) from None


async def _first(pieces):
    try:
        return await pieces.__anext__()
    except StopAsyncIteration:
        return []


async def _events(first: list[str], pieces, head: dict[str, Any]):
    """Server-sent events: a ``data`` line per piece of text, then ``event: done`` (or ``error``)."""
    try:
        chunk = first
        while True:
            for i, text in enumerate(chunk):
                if text:
                    yield f"data: {json.dumps({'index': i, 'text': text})}\n\n"
            try:
                chunk = await pieces.__anext__()
            except StopAsyncIteration:
                break
        yield f"event: done\ndata: {json.dumps(head)}\n\n"
    except FieldError as e:
        yield f"event: error\ndata: {json.dumps(e.to_dict())}\n\n"
    except (CharrnnError, Busy) as e:  # a failure after the answer began: said in the stream
        yield f"event: error\ndata: {json.dumps(FieldError(None, str(e)).to_dict())}\n\n"
    finally:
        await pieces.aclose()  # a client that went away: the worker stops its generation


async def _field_error(request: Request, e: FieldError) -> Response:
    headers = {"Retry-After": "1"} if e.status == 503 else None
    return JSON(e.to_dict(), status_code=e.status, headers=headers)


async def _http_error(request: Request, e: HTTPException) -> Response:
    return JSON({"error": {"field": None, "message": e.detail}}, status_code=e.status_code, headers=e.headers)
