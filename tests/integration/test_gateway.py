"""The OpenAI-compatible front door, called with the official ``openai`` SDK.

The real server (Starlette under uvicorn, in a thread of this process, on 127.0.0.1) in front
of a real pipeline on the session's broker and Ray: chat, completions, streaming, the models
list, an idempotent retry that reaches the pipeline once, errors in OpenAI's shape, a prompt
canary that never reaches a log line; and tenants: their API keys, rate limits and budgets.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from infra.broker import free_port
from infra.config import Config
from infra.gateway.app import build_app
from infra.gateway.pool import ServerPool, claim_port
from topics.reader import TopicReader

from .conftest import WAIT_S, running, simulated_config

pytestmark = pytest.mark.integration

CANARY = "canary-7f3a9c-never-log-me"
HELLO: list[Any] = [{"role": "user", "content": "hello"}]


@contextmanager
def _serving(config: Config, bootstrap: str) -> Iterator[str]:
    """The gateway on a free loopback port, in its own thread and event loop; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(config, bootstrap), host="127.0.0.1", port=port, log_level="info"))
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=WAIT_S)


@asynccontextmanager
async def _gateway(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any], **overrides: Any
) -> AsyncIterator[tuple[Config, str]]:
    config = simulated_config(tmp_path, **overrides)
    async with running(config, bootstrap, kafka):
        with _serving(config, bootstrap) as base_url:
            yield config, base_url


def _client(base_url: str, key: str = "no-tenants-configured") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=WAIT_S)


async def _requests_with_key(config: Config, kafka: dict[str, Any], key: bytes) -> int:
    topic = config.layout.requests
    reader = TopicReader(kafka, [topic], partitions=config.partitions())
    await reader.start()
    try:
        found = 0
        async for batch in reader.read_to_end():
            found += sum(1 for record in batch if record.key == key)
        return found
    finally:
        await reader.stop()


async def test_the_openai_sdk_gets_answers_in_openai_shape_with_the_route(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any], ray_session: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with _gateway(tmp_path, bootstrap, kafka) as (config, base_url):
        client = _client(base_url)
        listed = [model.id async for model in client.models.list()]
        assert listed == ["tierflow", "small", "medium", "large"]
        async with httpx.AsyncClient() as http:
            health = await http.get(base_url.removesuffix("/v1") + "/healthz")
        assert health.status_code == 200 and health.json()["broker"] == "reachable"

        chat = await client.chat.completions.create(
            model="tierflow", messages=[{"role": "user", "content": f"is {CANARY} sarcastic?"}]
        )
        assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
        assert chat.choices[0].finish_reason == "stop" and chat.usage is not None and chat.usage.prompt_tokens == 3
        route = chat.model_extra["tierflow"] if chat.model_extra else {}
        assert route["status"] in ("ok", "exhausted") and route["path"][0] == "small"
        assert route["why"][0]["stage"] == "route" and route["why"][0]["tier"] == "small"
        assert [d["stage"] for d in route["why"][1:]] == ["verify"] * len(route["path"])
        assert chat.model == route["tier"] or chat.model  # the model that answered

        pinned = await client.completions.create(model="large", prompt="one prompt")
        pinned_route = pinned.model_extra["tierflow"] if pinned.model_extra else {}
        assert pinned.object == "text_completion" and pinned_route["path"] == ["large"]

        stream = await client.chat.completions.create(
            model="tierflow", messages=[{"role": "user", "content": "stream me"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
        assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert streamed and chunks[-1].choices[0].finish_reason == "stop"

        headers = {"Idempotency-Key": "retry-1"}
        first, second = await asyncio.gather(
            client.chat.completions.create(
                model="tierflow", messages=[{"role": "user", "content": "once"}], extra_headers=headers
            ),
            client.chat.completions.create(
                model="tierflow", messages=[{"role": "user", "content": "once"}], extra_headers=headers
            ),
        )
        third = await client.chat.completions.create(
            model="tierflow", messages=[{"role": "user", "content": "once"}], extra_headers=headers
        )
        assert first.id == second.id == third.id
        request_key = first.id.removeprefix("chatcmpl-").encode()
        assert await _requests_with_key(config, kafka, request_key) == 1  # one request, however many retries

        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="tierflow", messages=[{"role": "user", "content": "x"}], n=2)
        assert bad.value.status_code == 400 and "n must be 1" in str(bad.value)
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
        await client.close()
    assert CANARY not in caplog.text


def _tenant(key: str, **limits: Any) -> dict[str, Any]:
    return {"key_sha256": hashlib.sha256(key.encode()).hexdigest(), **limits}


async def test_tenants_need_their_key_and_keep_to_their_rate_and_budget(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any], ray_session: None
) -> None:
    tenants = {
        "metered": _tenant("key-metered", rate_per_s=0.2, burst=1),
        "thrifty": _tenant("key-thrifty", budget=0.05),  # less than small + medium + large (0.111)
        "strict": _tenant("key-strict", budget=0.05, over_budget="refuse"),
    }
    async with _gateway(tmp_path, bootstrap, kafka, gateway={"tenants": tenants}) as (_, base_url):
        with pytest.raises(openai.AuthenticationError) as unknown:
            await _client(base_url, "key-nobody").chat.completions.create(model="tierflow", messages=HELLO)
        assert unknown.value.status_code == 401

        metered = _client(base_url, "key-metered")
        await metered.chat.completions.create(model="tierflow", messages=HELLO)
        with pytest.raises(openai.RateLimitError) as limited:
            await metered.chat.completions.create(model="tierflow", messages=HELLO)
        assert limited.value.response.headers["retry-after"] in {"4", "5"}

        thrifty = await _client(base_url, "key-thrifty").chat.completions.create(model="tierflow", messages=HELLO)
        route = thrifty.model_extra["tierflow"] if thrifty.model_extra else {}
        assert route["downgraded"] and "large" not in route["path"]  # narrowed to small and medium

        with pytest.raises(openai.RateLimitError) as refused:
            await _client(base_url, "key-strict").chat.completions.create(model="tierflow", messages=HELLO)
        assert "over budget" in str(refused.value) and refused.value.code == "budget_exceeded"


async def test_a_budget_and_a_finished_call_outlive_the_server_and_hold_across_servers(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any], ray_session: None
) -> None:
    tenants = {"once": _tenant("key-once", budget=0.1115, over_budget="refuse")}  # one call's worst case (0.111)
    config = simulated_config(tmp_path, gateway={"tenants": tenants})
    retry = {"Idempotency-Key": "only-once"}
    other: list[Any] = [{"role": "user", "content": "another"}]
    async with running(config, bootstrap, kafka):
        with _serving(config, bootstrap) as first_url:
            first = await _client(first_url, "key-once").chat.completions.create(
                model="tierflow", messages=HELLO, extra_headers=retry
            )
            with _serving(config, bootstrap) as beside_url:  # a second server with its own state, beside the first
                beside = _client(beside_url, "key-once")
                with pytest.raises(openai.RateLimitError) as refused_beside:
                    await beside.chat.completions.create(model="tierflow", messages=other)
                assert refused_beside.value.code == "budget_exceeded"
                retried = await beside.chat.completions.create(model="tierflow", messages=HELLO, extra_headers=retry)
                assert (retried.id, retried.choices[0].message.content) == (first.id, first.choices[0].message.content)
        with _serving(config, bootstrap) as restarted_url:  # every server stopped, then a new one
            client = _client(restarted_url, "key-once")
            again = await client.chat.completions.create(model="tierflow", messages=HELLO, extra_headers=retry)
            assert (again.id, again.choices[0].message.content) == (first.id, first.choices[0].message.content)
            with pytest.raises(openai.RateLimitError) as refused:
                await client.chat.completions.create(model="tierflow", messages=other)
            assert refused.value.code == "budget_exceeded" and "over budget" in str(refused.value)
        request_key = first.id.removeprefix("chatcmpl-").encode()
        assert await _requests_with_key(config, kafka, request_key) == 1  # the retry after the restart sent nothing


async def test_server_processes_on_one_port_share_the_calls_and_the_budget(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any], ray_session: None
) -> None:
    tenants = {"once": _tenant("key-once", budget=0.1115, over_budget="refuse")}  # one call's worst case (0.111)
    config = simulated_config(tmp_path, gateway={"tenants": tenants})
    port = free_port()
    async with running(config, bootstrap, kafka):
        pool = ServerPool(config, bootstrap, "127.0.0.1", port, extra=2)
        pool.start()
        try:
            pids: set[int] = set()
            async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0), timeout=5.0) as http:
                deadline = time.monotonic() + WAIT_S
                while len(pids) < 2 and time.monotonic() < deadline:  # a new connection per call
                    with contextlib.suppress(httpx.TransportError):
                        pids.add((await http.get(f"http://127.0.0.1:{port}/healthz")).json()["pid"])
                    await asyncio.sleep(0.05)
            assert len(pids) == 2, f"connections reached {len(pids)} of the 2 server processes"
            with pytest.raises(OSError):
                claim_port("127.0.0.1", port)  # a second deployment cannot join the port
            base_url = f"http://127.0.0.1:{port}/v1"
            await _client(base_url, "key-once").chat.completions.create(model="tierflow", messages=HELLO)
            for attempt in range(4):  # new connections, to either process: each knows the spend
                async with _client(base_url, "key-once") as fresh:
                    with pytest.raises(openai.RateLimitError) as refused:
                        content = f"call {attempt}"
                        await fresh.chat.completions.create(
                            model="tierflow", messages=[{"role": "user", "content": content}]
                        )
                assert refused.value.code == "budget_exceeded"
        finally:
            pool.stop()
