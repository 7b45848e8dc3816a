"""Schemathesis hooks for CI's run against the service (.ci/schemathesis):
MessagePack responses are decoded, so that they are checked against the
document as JSON ones are."""

import msgspec
import schemathesis


@schemathesis.deserializer("application/msgpack")
def msgpack(ctx, response):
    return msgspec.msgpack.decode(response.content)
