"""`weitiao serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over a run or a model.

Endpoints: `POST /v1/chat/completions` (streaming as server-sent events, or not), `POST /v1/completions` (raw text,
no template), `GET /v1/models`, `GET /health`. Errors use OpenAI's shape, `{"error": {"message", "type", "param",
"code"}}`, so the official clients raise their usual exceptions.

Limits, each answered before any work is done: an API key (401), the request body size (413), `max_tokens` above the
server's cap or a prompt longer than the model's context (400), and requests in flight beyond `max_concurrent`
(429, so a client backs off instead of waiting unboundedly). Requests decode one at a time (see `Engine`); the
rest wait their turn inside the admission limit.

Decoding is greedy unless a request sets `temperature` > 0: the same decoding `weitiao eval` scored, so answers
match what the run's report shows. (OpenAI's own default is temperature 1.)
"""
from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Literal, Optional, Union

from fastapi import Request  # at module level: FastAPI resolves the (string) annotation of endpoint arguments here
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from weitiao.serving.engine import Engine, Sampling


@dataclass
class ServerLimits:
    api_key: str | None = None  # None: no authentication (only sensible on 127.0.0.1)
    max_request_bytes: int = 1 << 20
    max_tokens: int = 1024  # cap on a request's max_tokens
    default_max_tokens: int = 256
    max_concurrent: int = 32  # requests admitted at once (decoding or waiting); beyond: 429


class _Part(BaseModel):
    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: Union[str, list[_Part]]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    min_tokens: int = Field(0, ge=0)  # vLLM's extension: stop tokens are masked until this many were generated
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: Optional[dict] = None


class ChatRequest(_Common):
    messages: list[_Message] = Field(min_length=1)


class CompletionRequest(_Common):
    prompt: Union[str, list[str]]


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def create_app(engine: Engine, limits: ServerLimits):
    """The FastAPI app: the OpenAI routes over `_Requests`, which reads, checks and answers each request."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(title="weitiao", docs_url=None, redoc_url=None)
    api = _Requests(engine, limits)
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": engine.names, "in_flight": api.slots.used}

    @app.get("/v1/models")
    async def models(request: Request):
        api.authorize(request)
        return {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "weitiao"}
                                           for n in engine.names]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = await api.read(request, ChatRequest)
        model = api.resolve_model(req)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
        check_conversation(messages)
        ids = engine.encode(engine.render(messages))
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return await api.respond(ids, api.sampling_of(req, len(ids)), model, req.stream, True, include_usage)

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await api.read(request, CompletionRequest)
        model = api.resolve_model(req)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) != 1:
            raise ApiError(400, "send one prompt per request", param="prompt")
        ids = engine.encode(prompts[0])
        if not ids:
            raise ApiError(400, "the prompt is empty", param="prompt")
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return await api.respond(ids, api.sampling_of(req, len(ids)), model, req.stream, False, include_usage)

    return app


def _usage(finished) -> dict:
    return {"prompt_tokens": finished.prompt_tokens, "completion_tokens": finished.completion_tokens,
            "total_tokens": finished.prompt_tokens + finished.completion_tokens}


class _Requests:
    """Reads, checks and answers requests for one engine under the server's limits."""

    def __init__(self, engine: Engine, limits: ServerLimits):
        self.engine, self.limits = engine, limits
        self.slots = _Slots(limits.max_concurrent)
        self.context = getattr(engine.loaded.model.config, "max_position_embeddings", None)

    def authorize(self, request: Request) -> None:
        if self.limits.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not (given.startswith("Bearer ") and secrets.compare_digest(given[7:], self.limits.api_key)):
            raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                           "authentication_error", code="invalid_api_key")

    async def read(self, request: Request, schema):
        """The request body, authorized, within the size limit (counted as it arrives), parsed by `schema`."""
        self.authorize(request)
        limit = self.limits.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body over {limit} bytes", code="request_too_large")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"request body over {limit} bytes", code="request_too_large")
        try:
            return schema.model_validate_json(body)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or None
            raise ApiError(400, f"invalid request: {where}: {first['msg']}" if where else
                           f"invalid request: {first['msg']}", param=where) from None

    def resolve_model(self, req: _Common) -> str:
        names = self.engine.names
        if req.model is None or req.model in names:
            return req.model or names[0]
        raise ApiError(404, f"model {req.model!r} is not served here; served: {', '.join(names)}",
                       code="model_not_found", param="model")

    def sampling_of(self, req: _Common, prompt_len: int) -> Sampling:
        limits = self.limits
        if req.n != 1:
            raise ApiError(400, "n > 1 is not supported; send separate requests", param="n")
        max_tokens = req.max_completion_tokens or req.max_tokens or limits.default_max_tokens
        if max_tokens > limits.max_tokens:
            raise ApiError(400, f"max_tokens {max_tokens} is over this server's limit of {limits.max_tokens}",
                           param="max_tokens")
        if req.min_tokens > max_tokens:
            raise ApiError(400, "min_tokens is larger than max_tokens", param="min_tokens")
        if self.context is not None and prompt_len + max_tokens > self.context:
            raise ApiError(400, f"the prompt ({prompt_len} tokens) plus max_tokens ({max_tokens}) exceeds the "
                           f"model's context of {self.context} tokens", param="messages")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        return Sampling(max_new_tokens=max_tokens, temperature=req.temperature or 0.0,
                        top_p=req.top_p if req.top_p is not None else 1.0, stop=stop, min_new_tokens=req.min_tokens,
                        seed=req.seed)

    async def respond(self, ids: list[int], sampling: Sampling, model: str, stream: bool, chat: bool,
                      include_usage: bool):
        """Decode one request: a JSON body, or an SSE stream of chunks; the admission slot is held until the end."""
        from fastapi.responses import JSONResponse, StreamingResponse
        from starlette.concurrency import run_in_threadpool

        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        kind = "chat.completion" if chat else "text_completion"
        release = self.slots.take()  # 429 when full
        if not stream:
            try:
                finished = await run_in_threadpool(self.engine.complete, ids, sampling, model)
            finally:
                release()
            choice = ({"index": 0, "message": {"role": "assistant", "content": finished.text},
                       "finish_reason": finished.finish_reason, "logprobs": None} if chat else
                      {"index": 0, "text": finished.text, "finish_reason": finished.finish_reason, "logprobs": None})
            return JSONResponse({"id": rid, "object": kind, "created": int(time.time()), "model": model,
                                 "choices": [choice], "usage": _usage(finished)})
        stream_events = self.events(ids, sampling, model, chat, include_usage, rid, kind, release)
        # a client that disconnects before the first chunk leaves the generator unstarted, so its `finally` never
        # runs; releasing when the generator is collected keeps the slot from leaking (release is idempotent)
        weakref.finalize(stream_events, release)
        return StreamingResponse(stream_events, media_type="text/event-stream")

    def events(self, ids, sampling: Sampling, model: str, chat: bool, include_usage: bool, rid: str, kind: str,
               release):
        """The SSE chunks of one streamed answer (a generator; its `finally` frees the admission slot)."""

        def event(choices: list, extra: dict | None = None) -> str:
            payload = {"id": rid, "object": kind + ".chunk" if chat else kind, "created": int(time.time()),
                       "model": model, "choices": choices, **(extra or {})}
            return "data: " + json.dumps(payload, ensure_ascii=False) + "\n\n"

        result = []
        try:
            if chat:
                yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            for piece in self.engine.stream(ids, sampling, model, result):
                yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None} if chat else
                             {"index": 0, "text": piece, "finish_reason": None, "logprobs": None}])
            finished = result[0]
            yield event([{"index": 0, "delta": {}, "finish_reason": finished.finish_reason} if chat else
                         {"index": 0, "text": "", "finish_reason": finished.finish_reason, "logprobs": None}])
            # decoding is over: free the slot before the last chunks, so a client that sends its next request as
            # soon as it reads [DONE] is admitted (the generator only reaches `finally` on the next pull)
            release()
            if include_usage:
                yield event([], {"usage": _usage(finished)})
            yield "data: [DONE]\n\n"
        finally:
            release()


class _Slots:
    """Admission control: at most `limit` requests in flight. Taken on the event loop, released from the worker
    thread that ran the request, hence the lock."""

    def __init__(self, limit: int):
        self.limit, self.used, self.lock = limit, 0, threading.Lock()

    def take(self):
        """Take a slot (ApiError 429 when none is free); returns its release function, safe to call twice."""
        with self.lock:
            if self.used >= self.limit:
                raise ApiError(429, f"server busy: {self.limit} requests in flight; retry shortly",
                               "rate_limit_error", code="too_many_requests")
            self.used += 1
        released = []

        def release() -> None:
            with self.lock:
                if not released:
                    released.append(True)
                    self.used -= 1

        return release


def check_conversation(messages: list[dict]) -> None:
    """Optional leading system turn, then user/assistant alternating, ending with the user (the turn to answer)."""
    roles = [m["role"] for m in messages]
    body = roles[1:] if roles and roles[0] == "system" else roles
    if not body or body[-1] != "user":
        raise ApiError(400, "the conversation must end with a user message", param="messages")
    for i, role in enumerate(body):
        if role != ("user" if i % 2 == 0 else "assistant"):
            raise ApiError(400, "messages must alternate user/assistant after an optional first system message",
                           param="messages")


def serve(engine: Engine, limits: ServerLimits, host: str, port: int, log=print) -> None:
    import uvicorn

    app = create_app(engine, limits)
    auth = "API key required" if limits.api_key else "no API key (anyone who can reach the port may use it)"
    log(f"serving {', '.join(engine.names)} on http://{host}:{port}/v1 ({auth}; at most {limits.max_concurrent} "
        f"requests in flight, max_tokens <= {limits.max_tokens})")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
