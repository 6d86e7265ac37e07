"""The ``openai`` backend: any OpenAI-compatible endpoint (vLLM, llama.cpp server, a provider).

Log-probs are requested on every call, so the confidence features are computed by
the same functions as the in-process ``llamacpp`` backend (``workers.backends.llm``):
for the same model and prompt the two agree up to the server's float rounding.

Options (besides the common LLM options):

* ``base_url`` (required), e.g. ``http://127.0.0.1:8000/v1``; ``model`` is sent as is.
* ``endpoint``: ``completions`` (default; ``/completions`` with ``logprobs: k``) or
  ``chat`` (``/chat/completions`` with ``logprobs: true, top_logprobs: k``) for
  providers that only serve chat.
* ``top_logprobs`` (20): alternatives read per position. In choice mode an option
  outside the top k gets probability 0, so keep k well above the number of options.
* ``api_key_env``: the name of the environment variable holding the API key (never
  the key itself); it must be set when the backend loads.
* ``timeout_s`` (30), ``max_retries`` (3), ``backoff_s`` (0.5, doubled per retry,
  with jitter; a ``Retry-After`` header wins), ``concurrency`` (4 requests in
  flight per worker replica).

Connection errors, timeouts and 408/409/429/5xx answers are retried; other 4xx are
not. A query that still fails becomes a Completion with ``error`` set (escalated by
the verifier); the rest of the batch is unaffected.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from topics.errors import ConfigError
from workers.backends.base import Backend, Completion, Query, register_backend
from workers.backends.confidence import logsumexp
from workers.backends.llm import (
    Sample,
    choice_completion,
    generate_completion,
    option_token_texts,
    parse_llm_options,
    request_seed,
)

BACKEND_KEYS = (
    "base_url", "endpoint", "top_logprobs", "api_key_env", "timeout_s", "max_retries", "backoff_s", "concurrency",
)  # fmt: skip
RETRIABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class EndpointError(Exception):
    """A call that failed for good (after retries, or not retriable)."""


def _number(tier: str, options: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ConfigError(f"tier {tier!r} option {name!r} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


@register_backend("openai")
class OpenAIBackend(Backend):
    def __init__(self, tier: str, options: Mapping[str, Any]) -> None:
        super().__init__(tier, options)
        self.llm_options = parse_llm_options(tier, options, BACKEND_KEYS)
        base_url = options.get("base_url")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"tier {tier!r} option 'base_url' must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.endpoint = options.get("endpoint", "completions")
        if self.endpoint not in ("completions", "chat"):
            raise ConfigError(f"tier {tier!r} option 'endpoint' must be 'completions' or 'chat'")
        self.top_logprobs = int(_number(tier, options, "top_logprobs", 20, 1, 20))
        self.api_key_env = str(options.get("api_key_env", ""))
        self.timeout_s = _number(tier, options, "timeout_s", 30.0, 0.01, 3600)
        self.max_retries = int(_number(tier, options, "max_retries", 3, 0, 20))
        self.backoff_s = _number(tier, options, "backoff_s", 0.5, 0.0, 60)
        self.concurrency = int(_number(tier, options, "concurrency", 4, 1, 1024))
        self._client: Any = None
        self._limit: asyncio.Semaphore | None = None
        self._jitter = random.Random(tier)

    def load(self) -> None:
        import httpx

        headers = {}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ConfigError(f"tier {self.tier!r}: environment variable {self.api_key_env} (the API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self.timeout_s)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def infer(self, batch: Sequence[Query]) -> list[Completion]:
        if self._client is None:
            raise RuntimeError("openai backend used before load()")
        if self._limit is None:  # created on the loop that uses it
            self._limit = asyncio.Semaphore(self.concurrency)
        return list(await asyncio.gather(*(self._infer_one(q) for q in batch)))

    async def _infer_one(self, query: Query) -> Completion:
        opts = self.llm_options
        prompt = opts.render(query.input)
        started = time.perf_counter()
        try:
            if opts.mode == "choice":
                body = await self._call(prompt, max_tokens=1, temperature=0.0, seed=opts.seed)
                tokens_in, positions = self._parse(body)
                if not positions:
                    raise EndpointError("the endpoint returned no tokens")
                top = positions[0][1]
                options = {
                    c: logsumexp([top.get(t, -math.inf) for t in option_token_texts(c)]) for c in opts.choices
                }
                return choice_completion(opts, options, tokens_in, time.perf_counter() - started)
            samples = []
            tokens_in = 0
            for index in range(opts.samples):
                seed = request_seed(opts.seed, query.request_id, index) % 2**31
                body = await self._call(prompt, opts.max_tokens, opts.temperature, seed, stop=opts.stop)
                tokens_in, positions = self._parse(body)
                samples.append(Sample(self._text(body), tuple(lp for lp, _ in positions)))
            return generate_completion(opts, samples, tokens_in, time.perf_counter() - started)
        except EndpointError as exc:
            return Completion("", 0.0, latency_ms=(time.perf_counter() - started) * 1000, error=str(exc))

    async def _call(
        self, prompt: str, max_tokens: int, temperature: float, seed: int, stop: Sequence[str] = ()
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model_name, "max_tokens": max_tokens, "temperature": temperature, "seed": seed,
        }  # fmt: skip
        if stop:
            payload["stop"] = list(stop)
        if self.endpoint == "chat":
            path = "/chat/completions"
            payload |= {"messages": [{"role": "user", "content": prompt}], "logprobs": True}
            payload["top_logprobs"] = self.top_logprobs
        else:
            path = "/completions"
            payload |= {"prompt": prompt, "logprobs": self.top_logprobs}
        return await self._post(path, payload)

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx

        assert self._limit is not None
        for attempt in range(self.max_retries + 1):
            wait = self.backoff_s * 2**attempt * (0.5 + self._jitter.random())
            async with self._limit:
                try:
                    response = await self._client.post(path, json=payload)
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                else:
                    if response.status_code == 200:
                        try:
                            body = response.json()
                        except ValueError as exc:
                            raise EndpointError(f"{path}: the answer is not JSON") from exc
                        if not isinstance(body, dict):
                            raise EndpointError(f"{path}: the answer is not a JSON object")
                        return body
                    problem = f"HTTP {response.status_code}"
                    if response.status_code not in RETRIABLE_STATUS:
                        raise EndpointError(f"{path}: {problem}: {response.text[:200]}")
                    wait = _retry_after(response.headers.get("retry-after"), wait)
            if attempt < self.max_retries:
                await asyncio.sleep(wait)
        raise EndpointError(f"{path}: {problem} after {self.max_retries + 1} attempts")

    def _parse(self, body: Mapping[str, Any]) -> tuple[int, list[tuple[float, dict[str, float]]]]:
        """``(prompt tokens, [(chosen token log-prob, {alternative text: log-prob}), ...])`` of a response."""
        try:
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            tokens_in = int(usage.get("prompt_tokens", 0))
            logprobs = choice.get("logprobs")
            if logprobs is None:
                raise EndpointError("the endpoint returned no logprobs (does it support them?)")
            positions: list[tuple[float, dict[str, float]]] = []
            if self.endpoint == "chat":
                for entry in logprobs.get("content") or []:
                    alternatives = {a["token"]: float(a["logprob"]) for a in entry.get("top_logprobs") or []}
                    positions.append((float(entry["logprob"]), alternatives))
            else:
                tops = logprobs.get("top_logprobs") or []
                for index, chosen in enumerate(logprobs.get("token_logprobs") or []):
                    alternatives = {str(k): float(v) for k, v in (tops[index] or {}).items()} if index < len(tops) else {}
                    positions.append((float(chosen) if chosen is not None else -math.inf, alternatives))
            return tokens_in, positions
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise EndpointError(f"unexpected response shape: {type(exc).__name__}: {exc}") from exc

    def _text(self, body: Mapping[str, Any]) -> str:
        choice = body["choices"][0]
        if self.endpoint == "chat":
            return str((choice.get("message") or {}).get("content") or "")
        return str(choice.get("text") or "")


def _retry_after(header: str | None, default: float) -> float:
    """Seconds from a ``Retry-After`` header (delta seconds only), capped at a minute."""
    try:
        return min(60.0, max(0.0, float(header))) if header else default
    except ValueError:
        return default
