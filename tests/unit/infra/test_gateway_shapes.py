"""The gateway's pure half: OpenAI bodies checked into calls, results shaped into OpenAI's responses."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.gateway.shapes import (
    ROUTED_MODEL,
    GatewayError,
    models,
    parse_call,
    request_id,
    response,
    result_error,
    stream_chunks,
)
from topics.messages import Result, Status

TIERS = ("small", "large")
LIMIT = 1000


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": ROUTED_MODEL, "messages": [{"role": "user", "content": "is this sarcasm?"}], **extra}


def test_a_chat_becomes_one_request_with_its_hints() -> None:
    body = _chat(tierflow={"allowed_tiers": ["large"], "max_cost": 0.5, "deadline_s": 10, "priority": 2})
    call = parse_call("chat", body, TIERS, LIMIT)
    assert (call.text, call.allowed_tiers, call.max_cost, call.deadline_s, call.priority) == (
        "is this sarcasm?",
        ("large",),
        0.5,
        10.0,
        2,
    )
    request = call.request("r1", now=100.0, tenant="acme")
    assert (request.id, request.deadline, request.tenant, request.hints.max_cost) == ("r1", 110.0, "acme", 0.5)


def test_earlier_turns_are_context_and_a_tier_name_pins_the_tier() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "and now?"},
    ]
    call = parse_call("chat", {"model": "small", "messages": messages}, TIERS, LIMIT)
    assert call.text == "system: be brief\nuser: hello\nassistant: hi\nuser: and now?"
    assert call.allowed_tiers == ("small",)
    completion = parse_call("completion", {"model": ROUTED_MODEL, "prompt": ["one prompt"]}, TIERS, LIMIT)
    assert completion.text == "one prompt" and completion.allowed_tiers is None


@pytest.mark.parametrize(
    ("body", "status", "param", "message"),
    [
        ([], 400, None, "the body must be a JSON object"),
        ({"messages": []}, 400, "model", "model is required"),
        (_chat(model="huge"), 404, "model", "model 'huge' does not exist; known: tierflow, small, large"),
        (_chat(messages=[]), 400, "messages", "messages must be a non-empty list"),
        (_chat(messages=[{"role": "user", "content": 3}]), 400, "messages[0].content", "content must be"),
        (_chat(messages=[{"role": "tool", "content": "x"}]), 400, "messages[0].role", "role must be"),
        (_chat(messages=[{"role": "assistant", "content": "x"}]), 400, "messages[0].role", "the last message"),
        (_chat(n=2), 400, "n", "n must be 1"),
        (_chat(stream="yes"), 400, "stream", "stream must be true or false"),
        (_chat(tierflow={"budget": 1}), 400, "tierflow.budget", "unknown hint 'budget'"),
        (_chat(tierflow={"allowed_tiers": ["medium"]}), 400, "tierflow.allowed_tiers", "unknown tier 'medium'"),
        (_chat(tierflow={"allowed_tiers": "large"}), 400, "tierflow.allowed_tiers", "non-empty list"),
        (_chat(tierflow={"max_cost": -1}), 400, "tierflow.max_cost", "must be in [0, 1e+06]"),
        (_chat(tierflow={"deadline_s": float("nan")}), 400, "tierflow.deadline_s", "finite number"),
        (_chat(tierflow={"priority": 1.5}), 400, "tierflow.priority", "whole number"),
        (_chat(messages=[{"role": "user", "content": "x" * 2000}]), 413, "messages", "over the limit of 1000"),
        (
            json.loads('{"model": "tierflow", "messages": [{"role": "user", "content": "\\ud800"}]}'),
            400,
            "messages",
            "lone surrogate",
        ),
    ],
)
def test_a_bad_body_is_one_error_naming_the_field(body: Any, status: int, param: str | None, message: str) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_call("chat", body, TIERS, LIMIT)
    error = caught.value
    assert (error.status, error.param) == (status, param)
    assert message in error.message
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}


TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
"""Any code points, lone surrogates included (a JSON body may escape them)."""
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([ROUTED_MODEL, "small", "nope"]) | JSON,
        "messages": st.lists(
            st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "system", "x"]), "content": JSON}),
            max_size=3,
        )
        | JSON,
        "prompt": JSON,
        "stream": JSON,
        "n": JSON,
        "tierflow": st.dictionaries(st.sampled_from(["allowed_tiers", "max_cost", "deadline_s", "priority"]), JSON)
        | JSON,
    },
)


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(["chat", "completion"]), body=FIELDS | JSON)
def test_any_body_is_a_call_or_a_gateway_error(kind: str, body: Any) -> None:
    try:
        call = parse_call(kind, body, TIERS, LIMIT)
    except GatewayError as error:
        assert 400 <= error.status < 500
        json.dumps(error.body())
        return
    request = call.request("r", now=1.0)
    assert type(request).from_wire(request.to_wire()) == request  # what is sent decodes as the router will


def _result(**extra: Any) -> Result:
    base = Result(
        request_id="r1",
        status=Status.OK,
        output="yes it is",
        tier="large",
        model="m-large",
        confidence=0.9,
        total_cost=0.02,
        path=("small", "large"),
    )
    return msgspec.structs.replace(base, **extra)


def test_a_result_is_an_openai_response_with_a_tierflow_object() -> None:
    call = parse_call("chat", _chat(), TIERS, LIMIT)
    doc = response(call, _result(policy_version=3), created=5)
    assert doc["object"] == "chat.completion" and doc["id"] == "chatcmpl-r1" and doc["model"] == "m-large"
    assert doc["choices"][0]["message"] == {"role": "assistant", "content": "yes it is"}
    assert doc["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert doc["tierflow"]["path"] == ["small", "large"] and doc["tierflow"]["policy_version"] == 3
    assert doc["tierflow"]["cost"] == 0.02 and doc["tierflow"]["why"] == []
    text = response(parse_call("completion", {"model": "tierflow", "prompt": "p"}, TIERS, LIMIT), _result())
    assert text["object"] == "text_completion" and text["choices"][0]["text"] == "yes it is"


def test_a_stream_sends_the_whole_answer_in_openai_chunks() -> None:
    chunks = list(stream_chunks(parse_call("chat", _chat(stream=True), TIERS, LIMIT), _result(), created=5))
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 3
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "yes it is"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["tierflow"]["tier"] == "large"


def test_results_without_an_answer_are_errors_and_retries_name_one_request() -> None:
    expired = result_error(_result(status=Status.EXPIRED, reason="deadline passed before tier large"))
    assert expired is not None and expired.status == 504 and "deadline passed" in expired.message
    rejected = result_error(_result(status=Status.REJECTED))
    assert rejected is not None and rejected.status == 422
    assert result_error(_result(status=Status.EXHAUSTED)) is None  # the best answer seen is delivered
    assert request_id("acme", "key-1", "fresh") == request_id("acme", "key-1", "other")
    assert request_id("acme", "key-1", "x") != request_id("globex", "key-1", "x")
    assert request_id("acme", None, "fresh") == "fresh"
    listed = models(TIERS, {"small": "qwen"})
    assert [m["id"] for m in listed["data"]] == ["tierflow", "small", "large"]
