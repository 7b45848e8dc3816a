"""Responses in JSON or MessagePack, as the request's ``Accept`` weighs them
(docs/api.md, "Encodings")."""

import msgspec
import pytest


@pytest.mark.parametrize(
    "accept, content_type",
    [
        ("application/msgpack", "application/msgpack"),
        ("APPLICATION/MsgPack", "application/msgpack"),
        ("application/msgpack, application/json", "application/msgpack"),
        ("application/msgpack;q=0.5, */*;q=0.1", "application/msgpack"),
        ("application/msgpack;q=0, application/json", "application/json"),
        ("application/json, application/msgpack;q=0.5", "application/json"),
        ("application/msgpack;q=0.5, */*", "application/json"),
        ("application/json;q=0.5, application/msgpack;q=0.8, */*", "application/msgpack"),
        ("application/*;q=0.9, application/json;q=0.1, application/msgpack;q=0.5", "application/msgpack"),
        ("application/msgpack;q=7, application/json;q=0.9", "application/msgpack"),
        ("text/html", "application/json"),
    ],
)
async def test_a_response_is_encoded_as_accept_weighs_it(client, accept, content_type):
    response = await client.get("/health/live", headers={"Accept": accept})
    assert response.content_type == content_type
    decode = msgspec.msgpack.decode if content_type == "application/msgpack" else msgspec.json.decode
    assert decode(await response.read())["status"] == "ok"
