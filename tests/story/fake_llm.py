"""A fake OpenAI-compatible chat server for the planner tests: records requests, answers from a function."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

MODEL = "fake-model"


class FakeLLM:
    """State of a running fake server: `base_url`, recorded `requests` (chat bodies), a settable `reply`."""

    def __init__(self) -> None:
        self.base_url = ""
        self.requests: list[dict[str, Any]] = []
        self.reply: Callable[[list[dict[str, Any]]], str] = lambda messages: "a quiet scene"
        self.fail_status: int | None = None
        """When set, chat completions answer with this HTTP status instead of a reply."""

    def reset(self) -> None:
        self.requests.clear()
        self.reply = lambda messages: "a quiet scene"
        self.fail_status = None

    def last_user_text(self) -> str:
        """The content of the last user message of the last request (what the planner wrote)."""
        users = [m for m in self.requests[-1]["messages"] if m["role"] == "user"]
        return users[-1]["content"]


def _app(state: FakeLLM) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "tests"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        state.requests.append(body)
        if state.fail_status is not None:
            return JSONResponse({"error": {"message": "fake failure", "type": "server_error"}}, state.fail_status)
        content = state.reply(body["messages"])
        return {
            "id": f"chatcmpl-{len(state.requests)}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": body.get("model", MODEL),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    return app


@contextmanager
def run_fake_llm() -> Iterator[FakeLLM]:
    """Serve a FakeLLM on 127.0.0.1 (a free port) in a background thread; stop it on exit."""
    state = FakeLLM()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # loopback only, never 0.0.0.0
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app(state), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake LLM server did not start")
        time.sleep(0.01)
    state.base_url = f"http://127.0.0.1:{port}/v1"
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
