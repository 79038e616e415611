"""`weitiao ui`: a browser workbench over the same functions as the CLI.

Why FastAPI with server-rendered pages and a little plain JavaScript, not Gradio (LlamaBoard's choice): weitiao
already serves its OpenAI-compatible API with FastAPI and uvicorn, so the UI adds no dependency (Gradio would add
about a hundred packages); every asset is in the package, so nothing is fetched from a CDN; and each page is a
plain URL that a test drives in a real browser. Forms post JSON (no multipart parser needed), and a bad input in
any form comes back as the CLI's own message, shown in the page.

Training, export and serving run as jobs in processes of their own (ui.jobs). Chat and the preference pairs load
the run's model into this process, once per run (serving.loaded), and answer one request at a time.
"""
from __future__ import annotations

import base64
import random
import secrets
import threading
from pathlib import Path

from weitiao.errors import WeitiaoError
from weitiao.ui import preferences
from weitiao.ui.jobs import Jobs

HERE = Path(__file__).parent


class State:
    """What the app holds: its root folder, the jobs, the loaded models and the pairs waiting for a choice."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.jobs = Jobs(self.root)
        self.engines: dict[str, object] = {}
        self.engine_lock = threading.Lock()
        self.pairs: dict[str, preferences.Pair] = {}
        self.rng = random.Random()

    def engine(self, run_dir: Path):
        """The run's model for chat and pairs, loaded on first use, with its base model served too."""
        from weitiao.serving.engine import Engine
        from weitiao.serving.loaded import load

        key = str(run_dir)
        with self.engine_lock:
            if key not in self.engines:
                self.engines[key] = Engine(load(key, log=lambda _: None), serve_base=True)
            return self.engines[key]


def basic_auth(credentials: str | None):
    """A middleware asking for `user:password` (HTTP basic), or None when the UI is open (127.0.0.1 only)."""
    if not credentials:
        return None
    expected = "Basic " + base64.b64encode(credentials.encode()).decode()

    async def middleware(request, call_next):
        from fastapi.responses import PlainTextResponse

        if not secrets.compare_digest(request.headers.get("authorization", ""), expected):
            return PlainTextResponse("authentication required", status_code=401,
                                     headers={"WWW-Authenticate": 'Basic realm="weitiao"'})
        return await call_next(request)

    return middleware


def create_app(root: str | Path = "runs", auth: str | None = None):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.staticfiles import StaticFiles

    state = State(Path(root))
    app = FastAPI(title="weitiao ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ui = state
    middleware = basic_auth(auth)
    if middleware:
        app.middleware("http")(middleware)

    @app.exception_handler(WeitiaoError)
    async def weitiao_error(request: Request, err: WeitiaoError):
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=400)

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    from weitiao.ui import routes

    routes.add_pages(app, state)
    routes.add_run_api(app, state)
    routes.add_model_api(app, state)
    return app
