"""Citations with spans: every ``[n]`` maps to the cited chunk, its document and the span of the supporting sentence
(a substring of the chunk text); markers that point nowhere are removed and reported — the same structure on
/query, /generate/rag and /v1 (model rag: the response's extension fields, and the stream's finishing chunk, read
with the official openai client)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from rag_ray.api.app import create_app
from rag_ray.embedding.fake import FakeEmbedder
from rag_ray.generation.citations import Passage, cite
from rag_ray.llm.base import ChatMessage
from rag_ray.llm.fake import FakeLLM
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, Chunk
from tests.api_helpers import compose

ALICE = {"Authorization": "Bearer alice-token"}
DOCS = {
    "c-tea": ("doc-tea", "Green tea comes from Camellia sinensis. The leaves are steamed or pan-fired soon after "
                         "picking to stop oxidation. It is brewed at about eighty degrees."),
    "c-lava": ("doc-lava", "Volcanoes sit above magma chambers. Basaltic lava flows far because its silica content is "
                           "low. Explosive eruptions throw ash high into the sky."),
    "c-glass": ("doc-glass", "Glass is made of melted sand. Soda ash lowers the melting point of the silica. Slow "
                             "cooling in an annealing oven removes stress."),
}
CHUNK_TEXT = {chunk_id: text for chunk_id, (_, text) in DOCS.items()}
FIELDS = {"number", "chunk_id", "doc_id", "source", "span", "quote", "overlap", "marker_offset"}


def passage_text(prompt: str, number: int) -> str:
    """The seeded text that follows the label ``[number]`` in the prompt (whatever the prompt's layout)."""
    after = prompt[prompt.index(f"[{number}]"):]
    return min(CHUNK_TEXT.values(), key=lambda text: after.find(text) if text in after else len(after))


def second_sentences(messages: Sequence[ChatMessage]) -> str:
    """Quotes the second sentence of passages [1] and [2], then claims something with a marker pointing nowhere."""
    prompt = "\n".join(m.content for m in messages)
    claims = [f"{passage_text(prompt, n).split('. ')[1].rstrip('.')} [{n}]." for n in (1, 2)]
    return " ".join(claims) + " Unicorns brew it too [9]."


@pytest.fixture
def api(make_settings: Any, fake_store: ChunkStore) -> Iterator[TestClient]:
    chunks = [Chunk(chunk_id, doc_id, f"file:///docs/{doc_id}.txt", 0, text, f"h-{chunk_id}", {}, Acl("system", (),
                                                                                                   "public"))
              for chunk_id, (doc_id, text) in DOCS.items()]
    fake_store.upsert(chunks, np.asarray(FakeEmbedder().embed([c.text for c in chunks])))
    fake_store.flush()
    services = compose(make_settings(mask_pii=False), store=fake_store, engine=FakeLLM(responder=second_sentences))
    with TestClient(create_app(services)) as client:
        yield client


def check(citations: list[dict[str, Any]], dropped: list[int], text: str) -> None:
    assert dropped == [9]
    assert len(citations) == 2
    for c in citations:
        assert set(c) == FIELDS
        chunk = CHUNK_TEXT[c["chunk_id"]]
        assert chunk[c["span"]["start"]:c["span"]["end"]] == c["quote"], "the span is a substring of the chunk"
        assert c["span"]["start"] > 0 and c["overlap"] == 1.0  # the second sentence, every word of the claim in it
        assert c["doc_id"] == DOCS[c["chunk_id"]][0] and c["source"].endswith(f"{c['doc_id']}.txt")
        assert text[c["marker_offset"]:].startswith(f"[{c['number']}]")


def test_query_citations(api: TestClient) -> None:
    body = api.post("/query", headers=ALICE, json={"query": "tea leaves oxidation lava silica", "k": 3}).json()
    check(body["citations"], body["dropped_markers"], body["answer"])
    assert "[9]" not in body["answer"] and "Unicorns brew it too." in body["answer"]
    used = body["context"]["used"]
    assert [c["chunk_id"] for c in body["citations"]] == used[:2]


def test_generate_rag_citations(api: TestClient) -> None:
    response = api.post("/generate/rag", headers=ALICE, json={
        "query": "tea leaves oxidation lava silica", "retrieval_config": {"k": 3},
        "generation_config": {"mode": "single", "enable_post_processing": False, "response_format": "plain_text"}})
    assert response.status_code == 200, response.text
    body = response.json()
    check(body["citations"], body["dropped_markers"], body["response"])
    assert "[9]" not in body["response"]


def test_openai_client_reads_citations(api: TestClient) -> None:
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key="alice-token", http_client=api, max_retries=0)
    question = [{"role": "user", "content": "tea leaves oxidation lava silica"}]
    completion = oai.chat.completions.create(model="rag", messages=question)  # type: ignore[arg-type]
    extra = completion.model_extra or {}
    check(extra["citations"], extra["dropped_markers"], completion.choices[0].message.content or "")

    chunks = list(oai.chat.completions.create(model="rag", messages=question, stream=True,  # type: ignore[arg-type]
                                              stream_options={"include_usage": True}))
    finishing = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    fields = finishing.model_extra or {}
    check(fields["citations"], fields["dropped_markers"], streamed)  # streamed text is left as sent, [9] reported
    assert chunks[-1].usage is not None and fields["answer_id"].startswith("ans-")


# ---- the mapping itself ----
PASSAGES = [Passage(1, "c-tea", "doc-tea", "tea.txt", DOCS["c-tea"][1]),
            Passage(2, "c-lava", "doc-lava", "lava.txt", DOCS["c-lava"][1])]


def test_each_marker_maps_to_its_supporting_sentence() -> None:
    cited = cite("Basaltic lava runs far since silica is low [2]. Tea leaves are pan-fired [1, 2]. Nothing [3, 4].",
                 PASSAGES)
    assert cited.dropped == [3, 4] and cited.text.endswith("Nothing.")
    by_number = [(c.number, c.quote) for c in cited.citations]
    assert by_number[0] == (2, "Basaltic lava flows far because its silica content is low.")
    assert by_number[1] == (1, "The leaves are steamed or pan-fired soon after picking to stop oxidation.")
    assert by_number[2][0] == 2  # [1, 2]: one citation per number, each its best sentence
    for c in cited.citations:
        assert PASSAGES[c.number - 1].text[c.start:c.end] == c.quote


def test_unstripped_text_keeps_markers_but_reports_them() -> None:
    cited = cite("Soda ash [7]. Tea [1].", PASSAGES, strip=False)
    assert cited.text == "Soda ash [7]. Tea [1]." and cited.dropped == [7]
    assert [c.number for c in cited.citations] == [1]
    assert cite("No markers at all.", PASSAGES).citations == []
