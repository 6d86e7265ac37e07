"""msgpack encoding and strict field readers shared by every message.

Decoding never trusts the record: every field is type- and range-checked and any
failure becomes a :class:`DecodeError` with a stable reason code, which the stage
loop turns into a dead letter. msgpack only — never pickle from Kafka.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack

from topics.errors import DecodeError

SCHEMA_VERSION = 1
"""Bumped on any incompatible wire change; decoders reject versions they do not know."""

DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20
"""Records larger than this are dead-lettered without being parsed."""

MAX_ID_CHARS = 200


def pack(kind: str, body: dict[str, Any]) -> bytes:
    """Encode ``body`` as a msgpack map tagged with the message kind and schema version."""
    return msgpack.packb({"k": kind, "v": SCHEMA_VERSION, **body}, use_bin_type=True)


def unpack(raw: bytes, kind: str, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Fields:
    """Decode one record of ``kind``; raise :class:`DecodeError` on anything unexpected."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise DecodeError("wrong_type", f"record value is {type(raw).__name__}, not bytes")
    if len(raw) > max_bytes:
        raise DecodeError("too_large", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError("not_msgpack", f"{type(exc).__name__}: {exc}"[:200]) from exc
    fields = Fields(obj, kind)
    if fields.str_("k") != kind:
        raise DecodeError("wrong_kind", f"expected a {kind} record, got {obj.get('k')!r}")
    version = fields.int_("v", lo=0)
    if version != SCHEMA_VERSION:
        raise DecodeError("bad_schema", f"schema version {version} is not {SCHEMA_VERSION}")
    return fields


class Fields:
    """Typed, validated access to one decoded msgpack map."""

    __slots__ = ("_obj", "_where")

    def __init__(self, obj: object, where: str) -> None:
        if not isinstance(obj, dict):
            raise DecodeError("wrong_type", f"{where} is {type(obj).__name__}, not a map")
        self._obj: dict[str, Any] = obj
        self._where = where

    def _get(self, key: str) -> Any:
        if key not in self._obj:
            raise DecodeError("missing_field", f"{self._where}.{key} is missing")
        return self._obj[key]

    def _wrong(self, key: str, want: str, got: object) -> DecodeError:
        return DecodeError("wrong_type", f"{self._where}.{key} must be {want}, got {type(got).__name__}")

    def has(self, key: str) -> bool:
        return self._obj.get(key) is not None

    def str_(self, key: str, *, max_len: int | None = None, non_empty: bool = False) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        if non_empty and not value:
            raise DecodeError("out_of_range", f"{self._where}.{key} is empty")
        if max_len is not None and len(value) > max_len:
            raise DecodeError("out_of_range", f"{self._where}.{key} is longer than {max_len}")
        return value

    def bytes_(self, key: str) -> bytes:
        value = self._get(key)
        if not isinstance(value, bytes):
            raise self._wrong(key, "bytes", value)
        return value

    def opt_str(self, key: str) -> str | None:
        return self.str_(key) if self.has(key) else None

    def int_(self, key: str, *, lo: int | None = None, hi: int | None = None) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._wrong(key, "an integer", value)
        _check_range(f"{self._where}.{key}", value, lo, hi)
        return value

    def float_(self, key: str, *, lo: float | None = None, hi: float | None = None) -> float:
        value = self._get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._wrong(key, "a number", value)
        number = float(value)
        if not math.isfinite(number):
            raise DecodeError("out_of_range", f"{self._where}.{key} is not finite ({number})")
        _check_range(f"{self._where}.{key}", number, lo, hi)
        return number

    def opt_float(self, key: str, *, lo: float | None = None, hi: float | None = None) -> float | None:
        return self.float_(key, lo=lo, hi=hi) if self.has(key) else None

    def confidence(self, key: str) -> float:
        """A confidence: finite and in [0, 1] (``nan < t`` is False, so NaN must never pass)."""
        return self.float_(key, lo=0.0, hi=1.0)

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._wrong(key, "a list of strings", value)
        return tuple(value)

    def float_map(self, key: str) -> dict[str, float]:
        value = self._get(key)
        if not isinstance(value, dict):
            raise self._wrong(key, "a map", value)
        out: dict[str, float] = {}
        for name, number in value.items():
            if not isinstance(number, int | float) or isinstance(number, bool) or not math.isfinite(number):
                raise DecodeError("out_of_range", f"{self._where}.{key}.{name} is not a finite number")
            out[name] = float(number)
        return out

    def nested(self, key: str) -> Fields:
        return Fields(self._get(key), f"{self._where}.{key}")

    def nested_list(self, key: str) -> list[Fields]:
        value = self._get(key)
        if not isinstance(value, list):
            raise self._wrong(key, "a list", value)
        return [Fields(item, f"{self._where}.{key}[{i}]") for i, item in enumerate(value)]


def _check_range(name: str, value: float, lo: float | None, hi: float | None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise DecodeError("out_of_range", f"{name}={value} is outside [{lo}, {hi}]")


def drop_none(body: Mapping[str, Any]) -> dict[str, Any]:
    """Omit absent optional fields from the wire map (smaller records)."""
    return {key: value for key, value in body.items() if value is not None}
