"""Where a stage replica's CPU goes: a summary of ``py-spy record --format raw`` output.

Usage (the stage replicas of a running pipeline are the ``ray::StageActor`` processes)::

    for pid in $(pgrep -f ray::StageActor); do
        .venv/bin/py-spy record --pid $pid --duration 10 --rate 100 --format raw --nonblocking \\
            --output /tmp/prof_$pid.txt &
    done; wait
    .venv/bin/python load_tests/pyspy_summary.py /tmp/prof_*.txt

Each file is named by the stage it sampled (found from the handler module on its
stacks) and summarised as the functions with the most samples of their own (self)
and the tierflow, aiokafka and msgspec frames with the most samples beneath them
(inclusive), in percent of the process's samples. py-spy records only threads that
are running, so the percentages are shares of CPU time, not of wall time.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

STAGES = {
    "verifier.py": "verifier",
    "router.py": "router",
    "model_worker.py": "worker",
    "results_sink.py": "sink",
    "controller_actor.py": "controller",
}
OURS = ("topics/", "policies/", "workers/", "aiokafka/", "msgspec", "asyncio/base_events.py")


def summarise(path: Path, top: int) -> str:
    own: Counter[str] = Counter()
    beneath: Counter[str] = Counter()
    total, stage = 0, "?"
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [re.sub(r" \(/\S*?/(site-packages|main)/", " (", frame) for frame in stack.split(";")]
        stage = next((name for module, name in STAGES.items() if module in stack), stage)
        own[frames[-1]] += samples
        for frame in set(frames):
            beneath[frame] += samples
    lines = [f"== {path.name}: {stage}, {total} samples", "  self:"]
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("  inclusive (tierflow, aiokafka, msgspec):")
    ours = [(frame, n) for frame, n in beneath.most_common() if any(key in frame for key in OURS)]
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in ours[: 2 * top]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("files", nargs="+", type=Path, help="py-spy raw (collapsed stack) files")
    parser.add_argument("--top", type=int, default=12, help="functions listed per table (default 12)")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        print(f"pyspy_summary: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    print("\n\n".join(summarise(path, args.top) for path in args.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
