"""Test rigs shipped with the library: protocol-faithful fake model servers on 127.0.0.1."""

from rag_ray.testing.fake_servers import (
    FakeAnthropicServer,
    FakeGeminiServer,
    FakeModelServer,
    FakeOllamaServer,
    FakeOpenAIServer,
    Fault,
    RecordedRequest,
)

__all__ = ["FakeAnthropicServer", "FakeGeminiServer", "FakeModelServer", "FakeOllamaServer", "FakeOpenAIServer",
           "Fault", "RecordedRequest"]
