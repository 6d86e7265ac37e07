"""The ``speculative`` backend: a tier whose worker holds a drafter and a target, deferring per token.

Options:

* ``drafter``, ``target`` (required): registry names or ``.gguf`` paths of two models
  with one tokenizer (``qwen2.5-coder-0.5b`` and ``qwen2.5-coder-1.5b``);
* ``rule`` (``opt``; or ``chow``, ``diff``), ``alpha`` (0.5: the cost of deferring,
  larger keeps more drafter tokens), ``gamma`` (4 drafted tokens per round),
  ``max_tokens`` (64), ``prompt`` (``"{input}"``), ``n_ctx`` (2048), ``n_threads`` (2),
  ``price_per_cpu_second`` (0: cost is measured seconds times this price).

Each answer reports where its tokens came from: ``deferred_share`` (positions the
rule handed to the target), ``replaced_share`` (where the target's token differed)
and ``target_calls_per_token``. Its confidence is ``1 - replaced_share``: the share
of the answer the drafter wrote and the target would have written too — the drafter
alone is trusted where the rule kept its tokens. Decoding is greedy; see
``workers/backends/speculative_decoding.py`` for the rules and the measured speed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from policies.deferral import RULES
from topics.errors import ConfigError
from workers.backends.base import Backend, Completion, Query, int_option, number_option, register_backend
from workers.backends.speculative_decoding import SpeculativeCascade


@register_backend("speculative")
class SpeculativeBackend(Backend):
    """A drafter and a target decoding together, greedily; not an ``LLMOptions`` backend.

    It shares names with the LLM options (``prompt``, ``max_tokens``,
    ``price_per_cpu_second``) and with llamacpp's (``n_ctx``, ``n_threads``), but reads
    only these, with its own defaults, so it accepts only these: ``temperature``,
    ``mode``, ``verify``, ``gpu_layers`` and the rest of the LLM options would be ignored,
    and are refused. ``model`` is not read either: the model name is ``drafter>target``.
    """

    OPTIONS = frozenset({
        "drafter", "target", "rule", "alpha", "gamma", "max_tokens", "prompt", "n_ctx", "n_threads",
        "price_per_cpu_second",
    })  # fmt: skip

    def __init__(self, tier: str, options: Mapping[str, Any]) -> None:
        super().__init__(tier, options)
        for key in ("drafter", "target"):
            if not isinstance(options.get(key), str) or not options[key]:
                raise ConfigError(f"tier {tier!r} option {key!r} must name a registry model or a .gguf file")
        self.rule = options.get("rule", "opt")
        if self.rule not in RULES:
            raise ConfigError(f"tier {tier!r} option 'rule' must be one of {', '.join(RULES)}, got {self.rule!r}")
        self.alpha = number_option(tier, options, "alpha", 0.5, 0.0, 1.0)
        self.price = number_option(tier, options, "price_per_cpu_second", 0.0, 0.0, 1e6)
        self.gamma = int_option(tier, options, "gamma", 4, 0, 64)
        self.max_tokens = int_option(tier, options, "max_tokens", 64, 1, 1 << 16)
        self.n_ctx = int_option(tier, options, "n_ctx", 2048, 64, 1 << 20)
        self.n_threads = int_option(tier, options, "n_threads", 2, 1, 1024)
        self.prompt = str(options.get("prompt", "{input}"))
        if "{input}" not in self.prompt:
            raise ConfigError(f"tier {tier!r} option 'prompt' must contain {{input}}")
        self._cascade: SpeculativeCascade | None = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return f"{self.options['drafter']}>{self.options['target']}"

    def load(self) -> None:
        self._cascade = SpeculativeCascade(
            self.options["drafter"], self.options["target"], n_ctx=self.n_ctx, n_threads=self.n_threads
        )

    async def infer(self, batch: Sequence[Query]) -> list[Completion]:
        return await asyncio.to_thread(self._infer_all, batch)

    def _infer_all(self, batch: Sequence[Query]) -> list[Completion]:
        if self._cascade is None:
            raise RuntimeError("speculative backend used before load()")
        with self._lock:
            return [self._infer_one(self._cascade, query) for query in batch]

    def _infer_one(self, cascade: SpeculativeCascade, query: Query) -> Completion:
        started = time.perf_counter()
        prompt = self.prompt.replace("{input}", query.input)
        try:
            result = cascade.generate(prompt, self.max_tokens, self.gamma, self.rule, self.alpha)
        except ValueError as exc:  # the prompt does not fit the context
            return Completion("", 0.0, error=str(exc))
        n = max(len(result.tokens), 1)
        seconds = time.perf_counter() - started
        return Completion(
            output=result.text.strip(),
            confidence=1.0 - result.replaced / n,
            features={
                "deferred_share": result.deferred / n,
                "replaced_share": result.replaced / n,
                "target_calls_per_token": result.target_calls / n,
            },
            tokens_in=len(cascade.tokenize(prompt)),
            tokens_out=len(result.tokens),
            cost=seconds * self.price,
            latency_ms=seconds * 1000,
        )

    async def close(self) -> None:
        if self._cascade is not None:
            self._cascade.close()
            self._cascade = None
