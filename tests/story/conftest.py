from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.story.fake_llm import FakeLLM, run_fake_llm


@pytest.fixture(scope="session")
def _fake_llm_server() -> Iterator[FakeLLM]:
    with run_fake_llm() as server:
        yield server


@pytest.fixture
def fake_llm(_fake_llm_server: FakeLLM) -> Iterator[FakeLLM]:
    """The fake chat server with no recorded requests and the default reply; state is reset after the test."""
    _fake_llm_server.reset()
    yield _fake_llm_server
    _fake_llm_server.reset()


@pytest.fixture
def closed_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (the port was free a moment ago): connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A base URL on 127.0.0.1 that accepts connections and never answers: requests time out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
