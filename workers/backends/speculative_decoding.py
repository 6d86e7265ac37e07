"""Speculative cascade: a small drafter writes, a larger target scores, a deferral rule picks per token.

A cascade defers whole queries; a speculative cascade (Narasimhan et al., "Faster
Cascades via Speculative Decoding", ICLR 2025) defers *mid-generation*, token by
token, and pays for the large model the way speculative decoding does:

1. the drafter q proposes ``gamma`` tokens greedily, one forward pass each;
2. the target p scores all of them in ONE forward pass (the batch holds the
   committed tail plus the draft, with logits requested only at the ``gamma + 1``
   positions that predict a drafted token or the one after the draft);
3. walking the draft left to right, a deferral rule decides per position from
   the two next-token distributions: keep the drafter's token, or defer and emit
   the target's (its argmax: decoding is greedy). A deferral that emits a token
   other than the drafted one ends the round, as a rejection does in speculative
   decoding: the rest of the draft was conditioned on a token that was not
   emitted. When the whole draft survives, the target's distribution after it
   comes for free, and its argmax is emitted as a ``bonus`` token.

Why this shape: the target's cost is one forward pass per round instead of one per
token, and a forward pass over ``gamma + 1`` positions costs little more than over
one on a memory-bound CPU. Unlike speculative decoding, which reproduces the
target exactly, the cascade lets the drafter's token stand where the rule says the
drafter is good enough, trading quality against speed through ``alpha``.

The deferral rules are pure code in ``policies/deferral.py``; this module is the
decoding loop that applies them.

The paper defines the rules for sampled decoding and samples the deferred token
from the target (or a residual); with greedy decoding (temperature 0, the only
mode here) the kept token is ``argmax q`` and the deferred one ``argmax p``, so
Chow at ``alpha = 0`` and any rule with drafter == target reproduce the target's
own greedy output (up to rounding: the target scores a draft in one batched pass,
and llama.cpp's batched kernels may round differently from one-token passes, which
can flip a near-tie).

KV caches: each model's cache is tracked as the token list it holds. After a round
both are rewound (``llama_memory_seq_rm``) to the longest prefix they share with
the committed sequence, at most all but its last token, so the next forward pass
always has a token whose logits give the next distribution. We drive
``llama_decode`` ourselves rather than ``Llama.eval`` because ``eval`` asks for
logits at one position only unless the model was built with ``logits_all=True``,
which keeps ``n_ctx x n_vocab`` floats (1.2 GB for Qwen's vocabulary at n_ctx 2048).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from policies.deferral import RULES, Probs, Rule, check_alpha, common_prefix, defers, softmax
from topics.errors import ConfigError
from workers.backends.assets.artifacts import LLAMA_CPP_HINT, resolve_model

SamplingMode = Literal["greedy"]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class SpeculativeResult:
    """One generation and where its tokens came from.

    ``tokens`` excludes the end-of-generation token, and so do the counts:
    ``kept + deferred + bonus == len(tokens)``. ``deferred`` counts the rule's
    decisions, including those where the target's token happens to equal the
    drafted one (``replaced`` counts only those where it differed).
    """

    text: str
    tokens: tuple[int, ...]
    drafted: int
    """Tokens the drafter proposed (some are discarded after a replacing deferral)."""
    kept: int
    """Drafted tokens emitted as they were."""
    deferred: int
    """Positions the rule handed to the target; the target's argmax was emitted."""
    replaced: int
    """Deferred positions where the target's token differed from the drafted one."""
    bonus: int
    """Target tokens emitted after a fully kept draft (free: same forward pass)."""
    target_calls: int
    """Forward passes of the target (one per round; one per token for the target alone)."""
    drafter_calls: int
    seconds: float
    """Wall time of the whole generation, prompt evaluation (``prefill_seconds``) included."""
    tokens_per_s: float
    prefill_seconds: float = 0.0
    """Time to evaluate the prompt (all but its last token) in the model(s) used."""
    mode: SamplingMode = "greedy"

    @property
    def deferred_share(self) -> float:
        """Share of the emitted tokens whose position the rule deferred (0 for an empty output)."""
        return self.deferred / len(self.tokens) if self.tokens else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second after the prompt was evaluated: the decoding speed alone."""
        seconds = self.seconds - self.prefill_seconds
        return len(self.tokens) / seconds if seconds > 0 else 0.0


# --------------------------------------------------------------------------- llama.cpp


class _Decoder:
    """One llama.cpp context whose KV cache is tracked as the token list it holds (sequence 0)."""

    def __init__(self, llm: Any, n_batch: int) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.llm = llm
        self.n_batch = n_batch
        self.n_vocab: int = llm.n_vocab()
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.memory = llama_cpp.llama_get_memory(llm.ctx)
        self.batch: Any = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.cached: list[int] = []
        self.calls = 0

    def close(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None

    def is_eog(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    def reset(self) -> None:
        self.lib.llama_memory_clear(self.memory, True)
        self.cached = []

    def sync(self, sequence: Sequence[int]) -> list[int]:
        """Rewind the cache to what it shares with ``sequence`` (at most all but its last token); return the rest."""
        keep = min(common_prefix(self.cached, sequence), len(sequence) - 1)
        if keep < len(self.cached):
            if not self.lib.llama_memory_seq_rm(self.memory, 0, keep, -1):
                raise RuntimeError("llama.cpp could not remove the tail of the KV cache")
            del self.cached[keep:]
        return list(sequence[keep:])

    def feed(self, tokens: Sequence[int], n_logits: int) -> list[Probs]:
        """Append ``tokens`` to the cache; the next-token distributions after each of the last ``n_logits``.

        Chunks of ``n_batch`` are cut from the front so that the last chunk holds
        every position whose logits are read.
        """
        if not tokens or not 1 <= n_logits <= min(len(tokens), self.n_batch):
            raise ValueError(f"cannot read {n_logits} positions after feeding {len(tokens)} tokens")
        head = max(0, len(tokens) - self.n_batch)
        chunks = [tokens[i : min(i + self.n_batch, head)] for i in range(0, head, self.n_batch)]
        chunks.append(tokens[head:])
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            self._decode(chunk, n_logits if last else 1)
        start = len(chunks[-1]) - n_logits
        rows = []
        for i in range(start, len(chunks[-1])):
            pointer = self.lib.llama_get_logits_ith(self.llm.ctx, i)
            rows.append(softmax(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))))
        return rows

    def _decode(self, chunk: Sequence[int], n_logits: int) -> None:
        batch = self.batch
        n_past = len(self.cached)
        batch.n_tokens = len(chunk)
        for i, token in enumerate(chunk):
            batch.token[i] = token
            batch.pos[i] = n_past + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i >= len(chunk) - n_logits
        code = self.lib.llama_decode(self.llm.ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")
        self.cached.extend(chunk)
        self.calls += 1


def vocabulary_mismatch(drafter: Any, target: Any) -> str | None:
    """Why two llama.cpp models cannot share token ids, or None when every token's text agrees.

    Speculative decoding hands token ids from one model to the other, so the
    vocabularies must be the same list, not merely the same size.
    """
    import llama_cpp

    a = llama_cpp.llama_model_get_vocab(drafter.model)
    b = llama_cpp.llama_model_get_vocab(target.model)
    checks = {
        "vocabulary size": (drafter.n_vocab(), target.n_vocab()),
        "tokenizer type": (llama_cpp.llama_vocab_type(a), llama_cpp.llama_vocab_type(b)),
        "BOS token": (llama_cpp.llama_vocab_bos(a), llama_cpp.llama_vocab_bos(b)),
        "EOS token": (llama_cpp.llama_vocab_eos(a), llama_cpp.llama_vocab_eos(b)),
    }
    for what, (x, y) in checks.items():
        if x != y:
            return f"{what} differs ({x} vs {y})"
    for token in range(drafter.n_vocab()):
        if llama_cpp.llama_vocab_get_text(a, token) != llama_cpp.llama_vocab_get_text(b, token):
            return f"token {token} differs"
    return None


class SpeculativeCascade:
    """A drafter and a target GGUF model with one tokenizer, decoding greedily as a speculative cascade.

    ``drafter`` and ``target`` are registry names or ``.gguf`` paths (resolved by
    ``workers.backends.assets.artifacts.resolve_model``); the same model may be both (two
    contexts). Not thread-safe: one generation at a time, like a llama.cpp context.
    """

    def __init__(
        self,
        drafter: str | Path,
        target: str | Path,
        *,
        n_ctx: int = 2048,
        n_batch: int = 512,
        n_threads: int = 2,
        gpu_layers: int | None = None,
    ) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise ConfigError(LLAMA_CPP_HINT) from exc
        if gpu_layers is None:
            gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        self.n_ctx = n_ctx

        def load(spec: str | Path) -> Any:
            return llama_cpp.Llama(
                model_path=str(resolve_model(str(spec))),
                n_ctx=n_ctx,
                n_batch=n_batch,
                n_ubatch=n_batch,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_gpu_layers=gpu_layers,
                logits_all=False,
                verbose=False,
            )

        drafter_llm, target_llm = load(drafter), load(target)
        mismatch = vocabulary_mismatch(drafter_llm, target_llm)
        if mismatch is not None:
            raise ConfigError(
                f"drafter {str(drafter)!r} and target {str(target)!r} do not share a tokenizer: {mismatch}"
            )
        self.drafter = _Decoder(drafter_llm, n_batch)
        self.target = _Decoder(target_llm, n_batch)

    def close(self) -> None:
        """Free the batches (the models are freed with their ``Llama`` objects)."""
        self.drafter.close()
        self.target.close()

    def tokenize(self, prompt: str) -> list[int]:
        """``prompt`` as llama.cpp's server reads it: BOS as the model wants, special tokens parsed."""
        tokens: list[int] = self.target.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        if not tokens:
            raise ValueError("empty prompt")
        return tokens

    def _check_room(self, prompt: Sequence[int], max_tokens: int, gamma: int) -> None:
        if max_tokens < 1 or gamma < 0:
            raise ValueError(f"max_tokens must be >= 1 and gamma >= 0, got {max_tokens} and {gamma}")
        if len(prompt) + max_tokens + gamma + 1 > self.n_ctx:
            raise ValueError(
                f"prompt of {len(prompt)} tokens plus {max_tokens} new ones does not fit the context ({self.n_ctx})"
            )

    def _result(
        self, tokens: list[int], counts: dict[str, int], started: float, prefill_seconds: float
    ) -> SpeculativeResult:
        seconds = time.perf_counter() - started
        text = self.target.llm.detokenize(tokens).decode("utf-8", errors="replace")
        return SpeculativeResult(
            text=text,
            tokens=tuple(tokens),
            drafted=counts["drafted"],
            kept=counts["kept"],
            deferred=counts["deferred"],
            replaced=counts["replaced"],
            bonus=counts["bonus"],
            target_calls=self.target.calls,
            drafter_calls=self.drafter.calls,
            seconds=seconds,
            tokens_per_s=len(tokens) / seconds if seconds > 0 else 0.0,
            prefill_seconds=prefill_seconds,
        )

    def _start(self, prompt: Sequence[int], decoders: Sequence[_Decoder]) -> float:
        """Clear both caches, evaluate all but the prompt's last token in ``decoders``; the seconds that took."""
        started = time.perf_counter()
        for decoder in (self.drafter, self.target):
            decoder.reset()
        if len(prompt) > 1:
            for decoder in decoders:
                decoder.feed(prompt[:-1], 1)
        for decoder in (self.drafter, self.target):
            decoder.calls = 0  # count the generation's passes only
        return time.perf_counter() - started

    def generate(
        self, prompt: str, max_tokens: int = 64, gamma: int = 4, rule: Rule = "opt", alpha: float = 0.5
    ) -> SpeculativeResult:
        """Greedy speculative-cascade generation of up to ``max_tokens`` tokens (fewer at end of generation)."""
        if rule not in RULES:
            raise ValueError(f"unknown deferral rule {rule!r}; known: {', '.join(RULES)}")
        check_alpha(alpha)
        started = time.perf_counter()
        sequence = self.tokenize(prompt)
        self._check_room(sequence, max_tokens, gamma)
        prefill = self._start(sequence, (self.drafter, self.target))
        out: list[int] = []
        counts = dict.fromkeys(("drafted", "kept", "deferred", "replaced", "bonus"), 0)
        finished = False
        while not finished and len(out) < max_tokens:
            # 1. draft: at most gamma tokens, no further than max_tokens, none after an end token.
            draft: list[int] = []
            qs: list[Probs] = []
            pending = self.drafter.sync(sequence)
            for _ in range(min(gamma, max_tokens - len(out))):
                [q] = self.drafter.feed(pending, 1)
                token = int(np.argmax(q))
                draft.append(token)
                qs.append(q)
                if self.drafter.is_eog(token):
                    break
                pending = [token]
            counts["drafted"] += len(draft)
            # 2. score: one target pass over the committed tail plus the whole draft.
            ps = self.target.feed(self.target.sync(sequence) + draft, len(draft) + 1)
            # 3. decide position by position.
            emitted: list[int] = []
            for i, drafted in enumerate(draft):
                deferred = defers(rule, qs[i], ps[i], alpha)
                token = int(np.argmax(ps[i])) if deferred else drafted
                if self.target.is_eog(token):
                    finished = True
                    break
                emitted.append(token)
                counts["deferred" if deferred else "kept"] += 1
                if token != drafted:
                    counts["replaced"] += 1
                    break
            else:
                if len(out) + len(emitted) < max_tokens:
                    token = int(np.argmax(ps[-1]))
                    if self.target.is_eog(token):
                        finished = True
                    else:
                        emitted.append(token)
                        counts["bonus"] += 1
            out.extend(emitted)
            sequence.extend(emitted)
        return self._result(out, counts, started, prefill)

    def generate_target_only(self, prompt: str, max_tokens: int = 64) -> SpeculativeResult:
        """The baseline: the target alone, greedy, one forward pass per token (same decoder code).

        Every token is the target's, so the result counts them all as ``deferred``.
        """
        started = time.perf_counter()
        sequence = self.tokenize(prompt)
        self._check_room(sequence, max_tokens, 0)
        prefill = self._start(sequence, (self.target,))
        out: list[int] = []
        while len(out) < max_tokens:
            [p] = self.target.feed(self.target.sync(sequence), 1)
            token = int(np.argmax(p))
            if self.target.is_eog(token):
                break
            out.append(token)
            sequence.append(token)
        counts = dict.fromkeys(("drafted", "kept", "deferred", "replaced", "bonus"), 0)
        counts["deferred"] = len(out)
        return self._result(out, counts, started, prefill)
