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
* ``choice_logit_bias``: ``{token id: bias}`` sent in choice mode only. Choice mode
  reads the distribution of the first generated token, which a server returns only
  if it generates one: an instruct model whose most likely next token is its end of
  turn stops with nothing. Biasing that token (e.g. ``{"2": -100}`` for SmolLM2)
  makes the server generate; the log-probs it reports are those of the unbiased
  distribution (llama.cpp, vLLM), so the features stay exact.
* ``extra_body``: fields merged into every request, for server-specific sampling
  settings, e.g. ``{ repeat_penalty = 1.0 }``: llama.cpp's server penalises
  repeats by default (1.1), which the in-process backend never does.
* ``api_key_env``: the name of the environment variable holding the API key (never
  the key itself); it must be set when the backend loads.
* ``timeout_s`` (30), ``max_retries`` (3), ``backoff_s`` (0.5, doubled per retry,
  with jitter; a ``Retry-After`` header wins), ``concurrency`` (4 requests in
  flight per worker replica).

The ``verify`` and ``self_ref`` questions are one more one-token call each; a
token outside the top k counts as probability 0 (both outside: the share is 0).

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
from workers.backends.base import Backend, Completion, Query, number_option, register_backend
from workers.backends.llm import (
    LLM_OPTIONS,
    Sample,
    choice_completion,
    generate_completion,
    parse_llm_options,
    request_seed,
    with_probe,
)

BACKEND_KEYS: frozenset[str] = frozenset({
    "base_url", "endpoint", "top_logprobs", "api_key_env", "timeout_s", "max_retries", "backoff_s", "concurrency",
    "choice_logit_bias", "extra_body",
})  # fmt: skip
"""The HTTP options beside the common LLM ones."""
RETRIABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class EndpointError(Exception):
    """A call that failed for good (after retries, or not retriable)."""


@register_backend("openai")
class OpenAIBackend(Backend):
    """An OpenAI-compatible endpoint; ``base_url`` is required."""

    OPTIONS = LLM_OPTIONS | BACKEND_KEYS

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
        self.top_logprobs = int(number_option(tier, options, "top_logprobs", 20, 1, 20))
        self.api_key_env = str(options.get("api_key_env", ""))
        self.timeout_s = number_option(tier, options, "timeout_s", 30.0, 0.01, 3600)
        self.max_retries = int(number_option(tier, options, "max_retries", 3, 0, 20))
        self.backoff_s = number_option(tier, options, "backoff_s", 0.5, 0.0, 60)
        self.concurrency = int(number_option(tier, options, "concurrency", 4, 1, 1024))
        bias = options.get("choice_logit_bias", {})
        if not isinstance(bias, Mapping) or not all(
            str(k).isdigit() and isinstance(v, int | float) and not isinstance(v, bool) for k, v in bias.items()
        ):
            raise ConfigError(f"tier {tier!r} option 'choice_logit_bias' must map token ids to numbers")
        self.choice_logit_bias = {str(k): float(v) for k, v in bias.items()}
        extra = options.get("extra_body", {})
        if not isinstance(extra, Mapping):
            raise ConfigError(f"tier {tier!r} option 'extra_body' must be a table")
        self.extra_body = dict(extra)
        self._client: Any = None
        self._limit: asyncio.Semaphore | None = None
        self._jitter = random.Random(tier)

    def load(self) -> None:
        import httpx

        headers = {}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ConfigError(f"tier {self.tier!r}: the API key variable {self.api_key_env} is not set")
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
                tokens_in, options = await self._option_logprobs(prompt, [opts.spelling(c) for c in opts.choices])
                completion = choice_completion(opts, dict(zip(opts.choices, options.values(), strict=True)),
                                               tokens_in, time.perf_counter() - started)  # fmt: skip
            else:
                samples = []
                tokens_in = 0
                for index in range(opts.samples):
                    seed = request_seed(opts.seed, query.request_id, index) % 2**31
                    body = await self._call(prompt, opts.max_tokens, opts.temperature, seed, stop=opts.stop)
                    tokens_in, positions = self._parse(body)
                    samples.append(Sample(self._text(body), tuple(lp for lp, _ in positions)))
                completion = generate_completion(opts, samples, tokens_in, time.perf_counter() - started)
            for probe in opts.probes():
                if completion.error is not None:
                    break
                question = probe.text(prompt, completion.output)
                question_tokens, answer = await self._option_logprobs(question, probe.tokens)
                elapsed = time.perf_counter() - started
                completion = with_probe(opts, completion, probe, answer, question_tokens, elapsed)
            return completion
        except EndpointError as exc:
            return Completion("", 0.0, latency_ms=(time.perf_counter() - started) * 1000, error=str(exc))

    async def option_logprobs(self, text: str) -> dict[str, float]:
        """Each choice's next-token log-prob after the rendered prompt; ``-inf`` outside the top k."""
        if self._limit is None:
            self._limit = asyncio.Semaphore(self.concurrency)
        opts = self.llm_options
        _, by_spelling = await self._option_logprobs(opts.render(text), [opts.spelling(c) for c in opts.choices])
        return dict(zip(opts.choices, by_spelling.values(), strict=True))

    async def _option_logprobs(self, prompt: str, spellings: Sequence[str]) -> tuple[int, dict[str, float]]:
        """Prompt tokens, and the next-token log-prob of each spelling (``-inf`` outside the top k)."""
        body = await self._call(prompt, 1, 0.0, self.llm_options.seed, logit_bias=self.choice_logit_bias)
        tokens_in, positions = self._parse(body)
        if not positions:
            raise EndpointError("the model ended before choosing (see the choice_logit_bias option)")
        top = positions[0][1]
        return tokens_in, {s: top.get(s, -math.inf) for s in spellings}

    async def _call(
        self,
        prompt: str,
        max_tokens: int,
        temperature: float,
        seed: int,
        stop: Sequence[str] = (),
        logit_bias: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = self.extra_body | {
            "model": self.model_name, "max_tokens": max_tokens, "temperature": temperature, "seed": seed,
        }  # fmt: skip
        if stop:
            payload["stop"] = list(stop)
        if logit_bias:
            payload["logit_bias"] = dict(logit_bias)
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
                    top = (tops[index] if index < len(tops) else None) or {}
                    alternatives = {str(k): float(v) for k, v in top.items()}
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
