"""``charrnn serve``: an HTTP API and a web page over loaded models (the ``serve`` extra:
Starlette and uvicorn). ``app.py`` builds the app, ``requests.py`` checks what a request asks,
``worker.py`` runs every generation on one thread, in turns; the page is the web export's
(``charrnn/export/web/``), which works against this API when no model comes with it."""

from __future__ import annotations

HINT = "charrnn serve needs Starlette and uvicorn: pip install 'charrnn[serve]'"


def require() -> None:
    """Raises CharrnnError with the install hint when the serve extra is missing."""
    from charrnn.errors import CharrnnError

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise CharrnnError(f"{HINT} ({e.name or e} is missing)") from None
