"""Benchmark: the speculative cascade (mid-generation deferral) against the target model alone.

A drafter (default Qwen2.5-Coder-0.5B) proposes ``--gamma`` tokens, the target
(Qwen2.5-Coder-1.5B, same tokenizer) scores them in one pass, and a deferral rule
(``workers/backends/speculative_decoding.py``: Chow, Diff, OPT) keeps or defers each. Per rule and
alpha: generated tokens per second (and the speed-up over the target alone), the
share of tokens whose position was deferred, target passes per token, and quality
against the target's own greedy output: positional token agreement, the prefix
they share, order-aware sequence similarity (difflib) and whole-output exact match.

Chow at alpha 0 defers every position, so it is greedy speculative decoding and
must reproduce the target exactly; larger alpha keeps more of the drafter's tokens.
Every prompt runs the baseline and every configuration back to back, so a change
in the machine's load hits them alike; the load average is recorded too.

    python load_tests/speculative_cascade.py --n 5 --max-tokens 48 --json speculative_cascade.json
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.deferral import RULES, Rule, common_prefix
from workers.backends.speculative_decoding import SpeculativeCascade, SpeculativeResult

SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
CHAT = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"

CODE_PROMPTS: tuple[str, ...] = (
    "Write a Python function that returns the factorial of n.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Write a Python function that counts the vowels in a string.",
    "Write a Python function that returns the greatest common divisor of two integers.",
    "Write a Python function that flattens a list of lists.",
    "Write a Python function that checks whether a number is prime.",
    "Write a Python function that reverses the words in a sentence.",
    "Write a Python function that returns the second largest number in a list.",
    "Write a Python function that removes duplicates from a list while keeping the order.",
    "Write a Python function that converts a temperature from Celsius to Fahrenheit.",
    "Write a Python function that computes the sum of the digits of an integer.",
    "Write a Python function that returns the indices of two numbers in a list that add up to a target.",
    "Write a Python function that checks whether two strings are anagrams.",
    "Write a Python function that performs binary search on a sorted list.",
    "Write a Python function that counts how often each word occurs in a text.",
    "Write a Python function that transposes a matrix given as a list of lists.",
    "Write a Python function that returns the longest common prefix of a list of strings.",
    "Write a Python function that validates that the brackets in a string are balanced.",
)


def prompts(source: str, n: int, seed: int) -> list[str]:
    """``n`` chat-formatted prompts: the built-in code tasks, or seeded MMLU questions."""
    if source == "code":
        if n > len(CODE_PROMPTS):
            raise SystemExit(f"there are {len(CODE_PROMPTS)} code prompts; asked for {n}")
        texts = list(CODE_PROMPTS[:n])
    else:
        from infra.datasets import load_items

        texts = [f"{item.text}\nGive the letter, then one sentence of reason." for item in load_items("mmlu", n, seed)]
    return [CHAT.format(system=SYSTEM, user=text) for text in texts]


@dataclass
class Tally:
    """Sums over the prompts for one configuration (rule, alpha) or the baseline."""

    rule: str
    alpha: float | None
    results: list[SpeculativeResult] = field(default_factory=list)
    agreement: list[float] = field(default_factory=list)
    prefix: list[float] = field(default_factory=list)
    similarity: list[float] = field(default_factory=list)
    exact: list[bool] = field(default_factory=list)

    def add(self, result: SpeculativeResult, reference: Sequence[int]) -> None:
        self.results.append(result)
        tokens = result.tokens
        longest = max(len(tokens), len(reference)) or 1
        self.agreement.append(sum(a == b for a, b in zip(tokens, reference, strict=False)) / longest)
        self.prefix.append(common_prefix(tokens, reference) / longest)
        self.similarity.append(difflib.SequenceMatcher(None, tokens, reference, autojunk=False).ratio())
        self.exact.append(tuple(tokens) == tuple(reference))

    def summary(self, baseline: tuple[float, float] | None) -> dict[str, object]:
        """Totals and means; ``baseline`` is the target alone's (tokens/s, decode tokens/s) for the speed-ups."""
        tokens = sum(len(r.tokens) for r in self.results)
        seconds = sum(r.seconds for r in self.results)
        decode_seconds = seconds - sum(r.prefill_seconds for r in self.results)
        tokens_per_s = tokens / seconds if seconds > 0 else 0.0

        def share(count: int) -> float:
            return count / tokens if tokens else 0.0

        def mean(values: Sequence[float]) -> float:
            return sum(values) / len(values) if values else 0.0

        return {
            "rule": self.rule,
            "alpha": self.alpha,
            "prompts": len(self.results),
            "tokens": tokens,
            "seconds": seconds,
            "prefill_seconds": seconds - decode_seconds,
            "tokens_per_s": tokens_per_s,
            "decode_tokens_per_s": tokens / decode_seconds if decode_seconds > 0 else 0.0,
            "speedup": tokens_per_s / baseline[0] if baseline else None,
            "decode_speedup": tokens / decode_seconds / baseline[1] if baseline and decode_seconds > 0 else None,
            "deferred_share": share(sum(r.deferred for r in self.results)),
            "replaced_share": share(sum(r.replaced for r in self.results)),
            "kept_share": share(sum(r.kept for r in self.results)),
            "bonus_share": share(sum(r.bonus for r in self.results)),
            "drafted": sum(r.drafted for r in self.results),
            "target_calls_per_token": share(sum(r.target_calls for r in self.results)),
            "token_agreement": mean(self.agreement),
            "prefix_agreement": mean(self.prefix),
            "sequence_similarity": mean(self.similarity),
            "exact_match": mean([float(e) for e in self.exact]),
        }


def parse_alphas(text: str) -> list[float]:
    try:
        alphas = [float(a) for a in text.split(",") if a.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--alphas must be comma-separated numbers, got {text!r}") from exc
    if not alphas or any(not a >= 0.0 for a in alphas):
        raise argparse.ArgumentTypeError(f"--alphas must be numbers >= 0, got {text!r}")
    return alphas


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drafter", default="qwen2.5-coder-0.5b")
    parser.add_argument("--target", default="qwen2.5-coder-1.5b")
    parser.add_argument("--prompts", choices=("code", "mmlu"), default="code")
    parser.add_argument("--n", type=int, default=5, help="prompts (default 5; 20 code prompts built in)")
    parser.add_argument("--seed", type=int, default=0, help="MMLU sample seed")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--gamma", type=int, default=4, help="drafted tokens per target pass (default 4)")
    parser.add_argument("--alphas", type=parse_alphas, default=parse_alphas("0,0.5,0.9"), help="e.g. 0,0.5,0.9")
    parser.add_argument("--rule", choices=(*RULES, "both", "all"), default="both", help="both = chow and opt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="speculative_cascade.json", metavar="PATH")
    args = parser.parse_args(argv)

    groups: dict[str, list[Rule]] = {"both": ["chow", "opt"], "all": list(RULES)}
    rules: list[Rule] = groups.get(args.rule, [args.rule])
    configs = [(rule, alpha) for rule in rules for alpha in args.alphas]
    console = Console(stderr=True)
    started = time.monotonic()
    load_before = os.getloadavg()
    cascade = SpeculativeCascade(args.drafter, args.target, n_ctx=1024, n_threads=args.threads)
    texts = prompts(args.prompts, args.n, args.seed)
    cascade.generate(texts[0], 4, args.gamma, "chow", 0.0)  # warm-up: first passes allocate buffers
    baseline = Tally("target only", None)
    tallies = {config: Tally(*config) for config in configs}
    for index, text in enumerate(texts):
        reference = cascade.generate_target_only(text, args.max_tokens)
        baseline.add(reference, reference.tokens)
        for (rule, alpha), tally in tallies.items():
            tally.add(cascade.generate(text, args.max_tokens, args.gamma, rule, alpha), reference.tokens)
        console.print(
            f"prompt {index + 1}/{len(texts)}: target alone {reference.tokens_per_s:.1f} tok/s, "
            f"{time.monotonic() - started:.0f} s so far"
        )
    cascade.close()

    base = baseline.summary(None)
    speeds = (float(base["tokens_per_s"]), float(base["decode_tokens_per_s"]))  # type: ignore[arg-type]
    runs = [tally.summary(speeds) for tally in tallies.values()]
    title = (
        f"speculative cascade {args.drafter} -> {args.target}, {args.n} {args.prompts} prompts, "
        f"max {args.max_tokens} tokens, gamma {args.gamma}, {args.threads} threads"
    )
    table = Table(title=title)
    speed = ("rule", "alpha", "tok/s", "speed-up", "decode tok/s", "speed-up", "deferred", "target passes/tok")
    for column in (*speed, "agree", "prefix", "similar", "exact"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    for run in [base, *runs]:
        table.add_row(
            str(run["rule"]),
            "-" if run["alpha"] is None else f"{run['alpha']:g}",
            f"{run['tokens_per_s']:.2f}",
            "1.00" if run["speedup"] is None else f"{run['speedup']:.2f}",
            f"{run['decode_tokens_per_s']:.2f}",
            "1.00" if run["decode_speedup"] is None else f"{run['decode_speedup']:.2f}",
            "-" if run["alpha"] is None else f"{run['deferred_share']:.0%}",
            f"{run['target_calls_per_token']:.2f}",
            f"{run['token_agreement']:.0%}",
            f"{run['prefix_agreement']:.0%}",
            f"{run['sequence_similarity']:.0%}",
            f"{run['exact_match']:.0%}",
        )
    Console(width=160).print(table)
    report = {
        "benchmark": "speculative_cascade",
        "command": "python load_tests/speculative_cascade.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "drafter": args.drafter,
        "target": args.target,
        "prompts": args.prompts,
        "n": args.n,
        "max_tokens": args.max_tokens,
        "gamma": args.gamma,
        "sampling": "greedy",
        "threads": args.threads,
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "wall_s": time.monotonic() - started,
        "baseline": base,
        "runs": runs,
    }
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
