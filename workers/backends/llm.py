"""What the LLM backends (``llamacpp``, ``openai``) share: options, prompts, cost, completions.

Both backends take the same tier options and turn model outputs into Completions
through the same functions, so a tier can move between an in-process GGUF and an
HTTP endpoint without its policy noticing.

Options (``[[tiers]] options = {...}``):

* ``mode``: ``choice`` (default) scores the fixed ``choices`` (default ``A``-``D``)
  from the next-token distribution after the prompt; ``generate`` writes free text.
  Each choice is read as the token ``choice_prefix + choice`` (prefix default
  ``" "``: after ``Answer:`` a model writes `` B``; use ``""`` when the prompt
  ends in a space). One spelling per choice, so every backend reads the same token.
* ``prompt``: template with ``{input}`` (default ``"{input}"``).
* ``max_tokens`` (32), ``temperature`` (0.0: greedy), ``samples`` (1), ``stop``
  (list of strings), ``seed`` (0) for generate mode. With ``samples > 1`` the
  answer is the majority's and the confidence is the agreement between samples.
* cost: ``price_per_input_token`` and ``price_per_output_token`` (USD per token)
  when given, else measured compute seconds x ``price_per_cpu_second`` (1e-4).

* ``verify`` (false): AutoMix's self-verification. After answering, the same model
  reads its answer back under ``VERIFY_PROMPT`` and the renormalised probability of
  `` Yes`` against `` No`` becomes the ``verify_p`` feature. AutoMix draws k sampled
  verifications and counts the share that say yes; reading the probability itself
  is that share's limit as k grows, at the price of one prompt evaluation.

Confidence: in choice mode the renormalised probability of the chosen option
(``max_prob``); in generate mode with one sample, the geometric mean of the tokens'
probabilities, ``exp(logprob_mean)``; with several samples, their agreement.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from topics.errors import ConfigError
from workers.backends.base import Completion
from workers.backends.confidence import agreement, logprob_features, option_features

Mode = Literal["choice", "generate"]
DEFAULT_CHOICES: tuple[str, ...] = ("A", "B", "C", "D")
DEFAULT_PRICE_PER_CPU_SECOND = 1e-4
VERIFY_PROMPT = "{prompt} {answer}\n\nIs the answer above correct? Reply Yes or No.\nReply:"
VERIFY_CHOICES: tuple[str, str] = ("Yes", "No")


@dataclass(frozen=True, slots=True)
class LLMOptions:
    mode: Mode = "choice"
    prompt: str = "{input}"
    choices: tuple[str, ...] = DEFAULT_CHOICES
    choice_prefix: str = " "
    max_tokens: int = 32
    temperature: float = 0.0
    samples: int = 1
    stop: tuple[str, ...] = ()
    seed: int = 0
    price_per_input_token: float = 0.0
    price_per_output_token: float = 0.0
    price_per_cpu_second: float = DEFAULT_PRICE_PER_CPU_SECOND
    verify: bool = False

    def render(self, text: str) -> str:
        return self.prompt.replace("{input}", text)

    def spelling(self, choice: str) -> str:
        """The text of the token that stands for ``choice`` after the prompt."""
        return self.choice_prefix + choice

    def verification(self, rendered_prompt: str, answer: str) -> str:
        """The prompt under which the model judges its own ``answer``."""
        return VERIFY_PROMPT.format(prompt=rendered_prompt, answer=answer)

    def cost(self, tokens_in: int, tokens_out: int, seconds: float) -> float:
        if self.price_per_input_token or self.price_per_output_token:
            return tokens_in * self.price_per_input_token + tokens_out * self.price_per_output_token
        return seconds * self.price_per_cpu_second


_COMMON = {
    "mode", "prompt", "choices", "choice_prefix", "max_tokens", "temperature", "samples", "stop", "seed",
    "price_per_input_token", "price_per_output_token", "price_per_cpu_second", "model", "verify",
}  # fmt: skip


def parse_llm_options(tier: str, options: Mapping[str, Any], backend_keys: Sequence[str]) -> LLMOptions:
    """Validate the common options; unknown keys (not common, not ``backend_keys``) are errors."""

    def key(name: str) -> str:
        return f"tier {tier!r} option {name!r}"

    def number(name: str, kind: type, default: float, lo: float, hi: float) -> Any:
        value = options.get(name, default)
        wrong_kind = kind is int and not isinstance(value, int)
        if isinstance(value, bool) or not isinstance(value, int | float) or wrong_kind:
            raise ConfigError(f"{key(name)} must be {kind.__name__}, got {value!r}")
        if not (lo <= value <= hi):
            raise ConfigError(f"{key(name)} must be in [{lo}, {hi}], got {value}")
        return kind(value)

    def strings(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = options.get(name, default)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{key(name)} must be a list of non-empty strings, got {value!r}")
        return tuple(value)

    unknown = sorted(set(options) - _COMMON - set(backend_keys))
    if unknown:
        raise ConfigError(f"{key(unknown[0])} is unknown; known: {', '.join(sorted(_COMMON | set(backend_keys)))}")
    mode = options.get("mode", "choice")
    if mode not in ("choice", "generate"):
        raise ConfigError(f"{key('mode')} must be 'choice' or 'generate', got {mode!r}")
    prompt = options.get("prompt", "{input}")
    if not isinstance(prompt, str) or "{input}" not in prompt:
        raise ConfigError(f"{key('prompt')} must be a string containing {{input}}")
    choices = strings("choices", DEFAULT_CHOICES)
    prefix = options.get("choice_prefix", " ")
    if not isinstance(prefix, str):
        raise ConfigError(f"{key('choice_prefix')} must be a string")
    if mode == "choice" and len(set(choices)) < 2:
        raise ConfigError(f"{key('choices')} needs at least two distinct options")
    return LLMOptions(
        mode=mode,
        prompt=prompt,
        choices=choices,
        choice_prefix=prefix,
        max_tokens=number("max_tokens", int, 32, 1, 32_768),
        temperature=number("temperature", float, 0.0, 0.0, 5.0),
        samples=number("samples", int, 1, 1, 64),
        stop=strings("stop", ()),
        seed=number("seed", int, 0, 0, 2**31 - 1),
        price_per_input_token=number("price_per_input_token", float, 0.0, 0.0, 1.0),
        price_per_output_token=number("price_per_output_token", float, 0.0, 0.0, 1.0),
        price_per_cpu_second=number("price_per_cpu_second", float, DEFAULT_PRICE_PER_CPU_SECOND, 0.0, 1e3),
        verify=_flag(options, "verify", key("verify")),
    )


def _flag(options: Mapping[str, Any], name: str, key: str) -> bool:
    value = options.get(name, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Sample:
    """One generated text with its tokens' log-probs."""

    text: str
    token_logprobs: tuple[float, ...]


def choice_completion(
    opts: LLMOptions, option_logprobs: Mapping[str, float], tokens_in: int, seconds: float
) -> Completion:
    """The Completion of a choice-mode query from each option's next-token log-prob."""
    try:
        best, features = option_features(option_logprobs)
    except ValueError as exc:
        return Completion("", 0.0, tokens_in=tokens_in, latency_ms=seconds * 1000, error=str(exc))
    return Completion(
        output=best,
        confidence=features["max_prob"],
        features=features,
        tokens_in=tokens_in,
        tokens_out=1,
        cost=opts.cost(tokens_in, 1, seconds),
        latency_ms=seconds * 1000,
    )


def generate_completion(opts: LLMOptions, samples: Sequence[Sample], tokens_in: int, seconds: float) -> Completion:
    """The Completion of a generate-mode query: the majority sample, with token and agreement features."""
    index, agree = agreement([s.text for s in samples])
    chosen = samples[index]
    features = logprob_features(chosen.token_logprobs)
    if len(samples) > 1:
        features["agreement"] = agree
        confidence = agree
    else:
        confidence = math.exp(features["logprob_mean"]) if "logprob_mean" in features else 0.0
    tokens_out = sum(len(s.token_logprobs) for s in samples)
    return Completion(
        output=chosen.text.strip(),
        confidence=confidence,
        features=features,
        tokens_in=tokens_in * len(samples),
        tokens_out=tokens_out,
        cost=opts.cost(tokens_in * len(samples), tokens_out, seconds),
        latency_ms=seconds * 1000,
    )


def request_seed(seed: int, request_id: str, sample: int) -> int:
    """A 64-bit seed from ``(seed, request id, sample index)``: stable across processes."""
    text = f"{seed}\x1f{request_id}\x1f{sample}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def with_verification(
    opts: LLMOptions, completion: Completion, verdict_logprobs: Mapping[str, float], tokens_in: int, seconds: float
) -> Completion:
    """``completion`` plus the ``verify_p`` feature, with the verification's tokens, time and cost added."""
    yes, no = (math.exp(verdict_logprobs[c]) for c in VERIFY_CHOICES)
    verify_p = yes / (yes + no) if yes + no > 0 else 0.0
    tokens_total = completion.tokens_in + tokens_in
    return dataclasses.replace(
        completion,
        features={**completion.features, "verify_p": verify_p},
        tokens_in=tokens_total,
        tokens_out=completion.tokens_out + 1,
        cost=opts.cost(tokens_total, completion.tokens_out + 1, seconds),
        latency_ms=seconds * 1000,
    )
