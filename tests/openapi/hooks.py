"""schemathesis hooks for tests/openapi.rs: tus PATCH bodies are raw bytes."""
import schemathesis


@schemathesis.serializer("application/offset+octet-stream")
def offset_octet_stream(ctx, value):
    if isinstance(value, bytes):
        return value
    return str(value).encode()

