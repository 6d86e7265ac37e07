"""The ``llamacpp`` backend: a GGUF model in process, through llama-cpp-python.

Options (besides the common LLM options of ``workers.backends.llm``):

* ``model`` (required): a registry name (``smollm2-135m``, ``qwen2.5-coder-0.5b``,
  ``qwen2.5-coder-1.5b``, ``gemma3-270m``; fetched and verified on first use) or a
  path to a ``.gguf`` file.
* ``n_ctx`` (2048), ``n_batch`` (512), ``n_threads`` (0: every core; used for both
  prompt evaluation and generation — give each tier its share of the cores when
  several share a machine, as spinning llama.cpp threads on an oversubscribed CPU
  are many times slower),
  ``gpu_layers`` (default: every layer when llama.cpp was built with GPU offload,
  else none).

Why our own decoding loop instead of ``create_completion``: token log-probs from
``create_completion`` need ``logits_all=True``, which keeps ``n_ctx x n_vocab``
floats (1.2 GB for Qwen's 152k vocabulary at n_ctx 2048). We evaluate the prompt,
read only the last position's logits (``llama_get_logits_ith(ctx, -1)``), and
log-softmax them ourselves; choice mode needs exactly one such read, generate mode
one per token. Sampling is seeded per request and sample, so a replayed request
gets the same answer. The log-probs reported are those of the untempered
distribution, as an OpenAI-compatible server reports them. The questions asked
about an answer afterwards (``verify``, ``self_ref``: ``workers.backends.llm.Probe``)
start with the prompt just evaluated, so they evaluate only the tokens after the
longest prefix still in the KV cache.

The model is loaded once in ``load()`` (when the worker actor starts); inference
runs in a thread so the stage loop stays responsive, one query at a time under a
lock (a llama.cpp context is not thread-safe).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from topics.errors import ConfigError
from workers.backends.assets.artifacts import LLAMA_CPP_HINT, resolve_model
from workers.backends.base import Backend, Completion, Query, int_option, register_backend
from workers.backends.confidence import log_softmax
from workers.backends.llm import (
    LLM_OPTIONS,
    Sample,
    choice_completion,
    generate_completion,
    parse_llm_options,
    request_seed,
    with_probe,
)

BACKEND_KEYS: frozenset[str] = frozenset({"n_ctx", "n_batch", "n_threads", "gpu_layers"})
"""The llama.cpp options beside the common LLM ones."""


@register_backend("llamacpp")
class LlamaCppBackend(Backend):
    """A GGUF model in process; ``model`` (in ``LLM_OPTIONS``) is required."""

    OPTIONS = LLM_OPTIONS | BACKEND_KEYS

    def __init__(self, tier: str, options: Mapping[str, Any]) -> None:
        super().__init__(tier, options)
        self.llm_options = parse_llm_options(tier, options, BACKEND_KEYS)
        model = options.get("model")
        if not isinstance(model, str) or not model:
            raise ConfigError(f"tier {tier!r} option 'model' must name a registry model or a .gguf file")
        self.model_spec = model
        self.n_ctx = int_option(tier, options, "n_ctx", 2048, 64, 1 << 20)
        self.n_batch = int_option(tier, options, "n_batch", 512, 1, 1 << 16)
        self.n_threads = int_option(tier, options, "n_threads", 0, 0, 1024)
        self.gpu_layers: int | None = (
            int_option(tier, options, "gpu_layers", 0, -1, 10_000) if "gpu_layers" in options else None
        )
        self._llm: Any = None
        self._lock = threading.Lock()
        self._option_tokens: dict[str, int] = {}
        self._probe_tokens: dict[str, dict[str, int]] = {}

    def load(self) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise ConfigError(LLAMA_CPP_HINT) from exc
        path = resolve_model(self.model_spec)
        gpu_layers = self.gpu_layers
        if gpu_layers is None:
            gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        self._llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=self.n_ctx,
            n_batch=self.n_batch,
            n_threads=self.n_threads or None,
            n_threads_batch=self.n_threads or None,  # prompt evaluation too, or it takes every core
            n_gpu_layers=gpu_layers,
            logits_all=False,
            verbose=False,
        )
        opts = self.llm_options
        self._option_tokens = {c: self._first_token(opts.spelling(c)) for c in opts.choices}
        self._probe_tokens = {probe.feature: {t: self._first_token(t) for t in probe.tokens} for probe in opts.probes()}
        for feature, tokens in self._probe_tokens.items():
            if len(set(tokens.values())) < 2:
                raise ConfigError(f"tier {self.tier!r}: the two {feature} tokens {list(tokens)} start with one token")

    def _first_token(self, text: str) -> int:
        """The token a choice is read as: the first of its spelling (one token for letters)."""
        token: int = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)[0]
        return token

    @property
    def loaded(self) -> Any:
        if self._llm is None:
            raise RuntimeError("llamacpp backend used before load()")
        return self._llm

    async def infer(self, batch: Sequence[Query]) -> list[Completion]:
        return await asyncio.to_thread(self._infer_all, batch)

    def _infer_all(self, batch: Sequence[Query]) -> list[Completion]:
        with self._lock:
            return [self._infer_one(query) for query in batch]

    def _infer_one(self, query: Query) -> Completion:
        started = time.perf_counter()
        opts = self.llm_options
        prompt = self._prompt_tokens(query.input)
        room = self.n_ctx - (1 if opts.mode == "choice" else opts.max_tokens)
        if len(prompt) > room:
            error = f"prompt of {len(prompt)} tokens does not fit the context ({self.n_ctx} tokens)"
            return Completion("", 0.0, tokens_in=len(prompt), error=error)
        if opts.mode == "choice":
            options = self._option_logprobs(prompt)
            completion = choice_completion(opts, options, len(prompt), time.perf_counter() - started)
        else:
            samples = self._generate(query.request_id, prompt)
            completion = generate_completion(opts, samples, len(prompt), time.perf_counter() - started)
        for probe in opts.probes():
            if completion.error is not None:
                break
            question = self._prompt_tokens_raw(probe.text(opts.render(query.input), completion.output))
            if len(question) >= self.n_ctx:
                continue  # no room to ask: the feature is missing, which the policies treat as low confidence
            logprobs = self._next_logprobs_cached(question)
            tokens = self._probe_tokens[probe.feature]
            answer = {spelling: float(logprobs[token]) for spelling, token in tokens.items()}
            completion = with_probe(opts, completion, probe, answer, len(question), time.perf_counter() - started)
        return completion

    def _prompt_tokens(self, text: str) -> list[int]:
        """The rendered prompt as llama.cpp's server tokenizes it."""
        return self._prompt_tokens_raw(self.llm_options.render(text))

    def _prompt_tokens_raw(self, prompt: str) -> list[int]:
        """Tokens of ``prompt`` with BOS as the model wants and special tokens parsed (as the server does)."""
        tokens: list[int] = self.loaded.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        return tokens

    def option_logprobs(self, text: str) -> dict[str, float]:
        """Each choice's log-prob as the next token after the rendered prompt (full-vocabulary distribution)."""
        with self._lock:
            return self._option_logprobs(self._prompt_tokens(text))

    def _option_logprobs(self, prompt: Sequence[int]) -> dict[str, float]:
        """Next-token log-prob of each choice after ``prompt``."""
        logprobs = self._next_logprobs(prompt, reset=True)
        return {option: float(logprobs[token]) for option, token in self._option_tokens.items()}

    def _next_logprobs(self, tokens: Sequence[int], reset: bool) -> npt.NDArray[np.float64]:
        """Evaluate ``tokens`` (after the cache, or from scratch) and return the next token's log-probs."""
        import llama_cpp

        llm = self.loaded
        if reset:
            llm.reset()
        llm.eval(tokens)
        pointer = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return log_softmax(np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)))

    def _next_logprobs_cached(self, tokens: Sequence[int]) -> npt.NDArray[np.float64]:
        """Like ``_next_logprobs(tokens, reset=True)``, but keep the KV cache's longest common prefix.

        A probe's question starts with the prompt just evaluated (and the answer
        after it), so only its tail is new; re-reading the whole question would
        double the cost of a probe on a CPU, where prompt evaluation dominates.
        """
        llm = self.loaded
        cached = llm.input_ids[: llm.n_tokens]
        keep = 0
        limit = min(len(cached), len(tokens) - 1)  # evaluate at least the last token: its logits are the answer
        while keep < limit and cached[keep] == tokens[keep]:
            keep += 1
        if keep == 0:
            return self._next_logprobs(tokens, reset=True)
        llm.n_tokens = keep  # eval() drops the cache after n_tokens before it appends
        return self._next_logprobs(tokens[keep:], reset=False)

    def _generate(self, request_id: str, prompt: Sequence[int]) -> list[Sample]:
        opts = self.llm_options
        llm = self.loaded
        first = self._next_logprobs(prompt, reset=True)
        state = llm.save_state() if opts.samples > 1 else None
        samples = []
        for index in range(opts.samples):
            if index and state is not None:
                llm.load_state(state)
            rng = np.random.default_rng(request_seed(opts.seed, request_id, index))
            samples.append(self._decode(first, rng))
        return samples

    def _decode(self, logprobs: npt.NDArray[np.float64], rng: np.random.Generator) -> Sample:
        """Generate up to ``max_tokens`` from the state whose next-token log-probs are ``logprobs``."""
        import llama_cpp

        opts = self.llm_options
        llm = self.loaded
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        tokens: list[int] = []
        chosen: list[float] = []
        text = ""
        for step in range(opts.max_tokens):
            if step:
                logprobs = self._next_logprobs([tokens[-1]], reset=False)
            token = self._pick(logprobs, rng)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            tokens.append(token)
            chosen.append(float(logprobs[token]))
            text = llm.detokenize(tokens).decode("utf-8", errors="replace")
            cut = min((text.find(s) for s in opts.stop if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
                break
        return Sample(text, tuple(chosen))

    def _pick(self, logprobs: npt.NDArray[np.float64], rng: np.random.Generator) -> int:
        temperature = self.llm_options.temperature
        if temperature == 0.0:
            return int(np.argmax(logprobs))
        scaled = logprobs / temperature
        probs = np.exp(scaled - scaled.max())
        return int(rng.choice(probs.size, p=probs / probs.sum()))
