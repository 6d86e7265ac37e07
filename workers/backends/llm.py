"""What the LLM backends (``llamacpp``, ``openai``) share: options, prompts, cost, completions.

Both backends take the same tier options and turn model outputs into Completions
through the same functions, so a tier can move between an in-process GGUF and an
HTTP endpoint without its policy noticing.

Options (``[[tiers]] options = {...}``; the names are ``LLM_OPTIONS``: the fields of
``LLMOptions`` plus ``model``, which each backend reads itself):

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
* ``self_ref`` (false): Self-REF's confidence tokens. After answering, the model is
  asked ``self_ref_prompt`` (default ``SELF_REF_PROMPT``; ``{prompt}`` is the
  rendered prompt, ``{answer}`` the answer) and the ``self_ref`` feature is
  P(confident) / (P(confident) + P(unconfident)) of the two next tokens
  ``self_ref_tokens`` (default `` Yes``, `` No``, each read as its first token).
  Self-REF fine-tunes the model to emit dedicated confidence tokens after its
  answer; an untuned model is *prompted* here, so the signal is only as good as
  the model's reading of the question.

``verify`` and ``self_ref`` are the same computation — a yes/no question about the
answer, read off one next-token distribution — with different prompts and tokens:
both are a ``Probe``, and each costs one more prompt evaluation (the llamacpp
backend reuses the prompt's cached prefix).

Confidence: in choice mode the renormalised probability of the chosen option
(``max_prob``); in generate mode with one sample, the geometric mean of the tokens'
probabilities, ``exp(logprob_mean)``; with several samples, their agreement,
and the ``semantic_entropy`` feature (nats over normalised-answer clusters; see
``workers.backends.confidence``). Choice mode's ``entropy`` is its exact analogue.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from topics.errors import ConfigError
from workers.backends.base import MODEL_NAME_OPTIONS, Completion
from workers.backends.confidence import agreement, binary_share, logprob_features, option_features, semantic_entropy

Mode = Literal["choice", "generate"]
DEFAULT_CHOICES: tuple[str, ...] = ("A", "B", "C", "D")
DEFAULT_PRICE_PER_CPU_SECOND = 1e-4
VERIFY_PROMPT = "{prompt} {answer}\n\nIs the answer above correct? Reply Yes or No.\nReply:"
SELF_REF_PROMPT = "{prompt} {answer}\nAre you confident your answer is correct? Answer Yes or No:"
YES_NO: tuple[str, str] = (" Yes", " No")
_PROBE_FIELDS = re.compile(r"\{(prompt|answer)\}")


@dataclass(frozen=True, slots=True)
class Probe:
    """A yes/no question the model is asked about its own answer, read as P(yes) / (P(yes) + P(no)).

    The answer to the question is never generated: the two tokens' log-probs are
    read off the next-token distribution after ``template``, so one prompt
    evaluation gives an exact probability rather than a sampled vote.
    """

    feature: str
    """The feature the share is reported as (``verify_p``, ``self_ref``)."""
    template: str
    """The question; ``{prompt}`` is the rendered prompt, ``{answer}`` the answer."""
    tokens: tuple[str, str]
    """The spellings of the yes (confident) and the no (unconfident) token."""

    def text(self, rendered_prompt: str, answer: str) -> str:
        """The question about ``answer`` (one pass, so braces inside the prompt or answer stay as they are)."""
        fields = {"prompt": rendered_prompt, "answer": answer}
        return _PROBE_FIELDS.sub(lambda match: fields[match.group(1)], self.template)


VERIFY_PROBE = Probe("verify_p", VERIFY_PROMPT, YES_NO)


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
    self_ref: bool = False
    self_ref_prompt: str = SELF_REF_PROMPT
    self_ref_tokens: tuple[str, str] = YES_NO

    def render(self, text: str) -> str:
        return self.prompt.replace("{input}", text)

    def spelling(self, choice: str) -> str:
        """The text of the token that stands for ``choice`` after the prompt."""
        return self.choice_prefix + choice

    def probes(self) -> tuple[Probe, ...]:
        """The questions asked about every answer after it is given: ``verify``, then ``self_ref``."""
        probes = [VERIFY_PROBE] if self.verify else []
        if self.self_ref:
            probes.append(Probe("self_ref", self.self_ref_prompt, self.self_ref_tokens))
        return tuple(probes)

    def cost(self, tokens_in: int, tokens_out: int, seconds: float) -> float:
        if self.price_per_input_token or self.price_per_output_token:
            return tokens_in * self.price_per_input_token + tokens_out * self.price_per_output_token
        return seconds * self.price_per_cpu_second


LLM_OPTIONS: frozenset[str] = MODEL_NAME_OPTIONS | {f.name for f in dataclasses.fields(LLMOptions)}
"""The option names every LLM backend accepts: derived from ``LLMOptions`` so a new field is
accepted by ``create_backend`` without a second list to keep in step; ``model`` names the
model (a registry name or file for llamacpp, the served name for openai)."""


def parse_llm_options(tier: str, options: Mapping[str, Any], backend_keys: Collection[str]) -> LLMOptions:
    """Validate the common options; unknown keys (not ``LLM_OPTIONS``, not ``backend_keys``) are errors.

    ``create_backend`` refuses unknown names before a backend's constructor calls this;
    the check here keeps the function safe to call on its own.
    """

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

    known = LLM_OPTIONS | set(backend_keys)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"{key(unknown[0])} is unknown; known: {', '.join(sorted(known))}")
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
    self_ref_prompt = options.get("self_ref_prompt", SELF_REF_PROMPT)
    if not isinstance(self_ref_prompt, str) or "{answer}" not in self_ref_prompt:
        raise ConfigError(f"{key('self_ref_prompt')} must be a string containing {{answer}}")
    self_ref_tokens = strings("self_ref_tokens", YES_NO)
    if len(self_ref_tokens) != 2 or self_ref_tokens[0] == self_ref_tokens[1]:
        raise ConfigError(f"{key('self_ref_tokens')} must be two different tokens: [confident, unconfident]")
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
        self_ref=_flag(options, "self_ref", key("self_ref")),
        self_ref_prompt=self_ref_prompt,
        self_ref_tokens=(self_ref_tokens[0], self_ref_tokens[1]),
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
        features["semantic_entropy"] = semantic_entropy([s.text for s in samples])
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


def with_probe(
    opts: LLMOptions,
    completion: Completion,
    probe: Probe,
    token_logprobs: Mapping[str, float],
    tokens_in: int,
    seconds: float,
) -> Completion:
    """``completion`` plus ``probe``'s feature, with the probe's tokens, time and cost added.

    ``token_logprobs`` maps each of ``probe.tokens`` to its next-token log-prob after
    the probe's question; ``seconds`` is the time since the query started.
    """
    yes, no = (token_logprobs[t] for t in probe.tokens)
    tokens_total = completion.tokens_in + tokens_in
    return dataclasses.replace(
        completion,
        features={**completion.features, probe.feature: binary_share(yes, no)},
        tokens_in=tokens_total,
        tokens_out=completion.tokens_out + 1,
        cost=opts.cost(tokens_total, completion.tokens_out + 1, seconds),
        latency_ms=seconds * 1000,
    )
