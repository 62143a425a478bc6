"""File ingest end to end in-process: real parsers, real Milvus Lite, real SQLite, fake embedder."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_ray.errors import InvalidInput, PermissionDenied
from rag_ray.ingest.file_ingest import FileIngestRequest
from rag_ray.metadata import MetadataDB
from rag_ray.store.filters import literal
from rag_ray.store.milvus import ChunkStore
from rag_ray.types import Acl, make_doc_id
from tests.ingest_helpers import copy_documents, local_ingestor


@pytest.fixture
def db(tmp_path: Path) -> MetadataDB:
    return MetadataDB(f"sqlite:///{tmp_path / 'meta.sqlite'}")


def ids_by_doc(store: ChunkStore) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for row in store.query("", ("id", "doc_id")):
        out.setdefault(row["doc_id"], set()).add(row["id"])
    return out


def test_reingest_is_idempotent_and_tracks_changes(tmp_path, shared_data, db, fake_store):
    docs = copy_documents(shared_data, tmp_path)
    ingestor = local_ingestor(db, fake_store)
    request = FileIngestRequest(path=docs, acl=Acl("system", (), "public"))

    first = ingestor.run(request)
    assert first.status == "succeeded" and first.errors == []
    assert first.files_processed == 14
    before = ids_by_doc(fake_store)
    assert sum(len(v) for v in before.values()) == first.chunks_written

    second = ingestor.run(request)
    assert (second.files_processed, second.files_skipped, second.chunks_written) == (0, 14, 0)
    assert ids_by_doc(fake_store) == before

    changed = docs / "en_war_and_peace_1p.txt"
    changed.write_text(changed.read_text() + "\n\nA new closing paragraph about Napoleon's letters.\n")
    removed = docs / "ko_namuwiki_profile_excerpt.txt"
    removed.unlink()
    third = ingestor.run(request)
    assert (third.files_processed, third.files_deleted) == (1, 1)
    after = ids_by_doc(fake_store)
    changed_id, removed_id = make_doc_id(str(changed.resolve())), make_doc_id(str(removed.resolve()))
    assert removed_id not in after
    assert after[changed_id] != before[changed_id]
    untouched = {d: ids for d, ids in before.items() if d not in (changed_id, removed_id)}
    assert {d: after[d] for d in untouched} == untouched
    stale = before[changed_id] - after[changed_id]
    assert stale and not fake_store.ids_where(f"id in [{', '.join(literal(i) for i in stale)}]")


def test_touching_a_file_without_changing_it_writes_nothing(tmp_path, shared_data, db, fake_store):
    docs = copy_documents(shared_data, tmp_path)
    ingestor = local_ingestor(db, fake_store)
    request = FileIngestRequest(path=docs, file_types=["txt"])
    ingestor.run(request)
    before = ids_by_doc(fake_store)
    (docs / "en_war_and_peace_1p.txt").touch()
    again = ingestor.run(request)
    assert (again.files_processed, again.files_skipped) == (0, 3)
    assert ids_by_doc(fake_store) == before


def test_file_type_filter_does_not_delete_other_types(tmp_path, shared_data, db, fake_store):
    docs = copy_documents(shared_data, tmp_path)
    ingestor = local_ingestor(db, fake_store)
    ingestor.run(FileIngestRequest(path=docs, file_types=["txt"]))
    txt_docs = set(ids_by_doc(fake_store))
    result = ingestor.run(FileIngestRequest(path=docs, file_types=["xlsx"]))
    assert result.files_deleted == 0
    assert txt_docs <= set(ids_by_doc(fake_store))


def test_corrupt_file_is_a_per_file_error_and_keeps_old_chunks(tmp_path, shared_data, db, fake_store):
    docs = copy_documents(shared_data, tmp_path)
    ingestor = local_ingestor(db, fake_store)
    request = FileIngestRequest(path=docs, file_types=["pdf", "txt"])
    ingestor.run(request)
    pdf = docs / "en_layout_parser_paper_2p.pdf"
    pdf_id = make_doc_id(str(pdf.resolve()))
    kept = ids_by_doc(fake_store)[pdf_id]
    pdf.write_bytes(b"%PDF-1.4 this is not really a pdf")
    (docs / "broken.txt").write_bytes(b"fine text")
    result = ingestor.run(request)
    assert result.status == "succeeded"
    assert [e["item"] for e in result.errors] == [str(pdf.resolve())]
    assert ids_by_doc(fake_store)[pdf_id] == kept  # the broken new version lost nothing
    status = ingestor.jobs.get(result.job_id)
    assert status.errors_count == 1 and status.errors[0]["item"] == str(pdf.resolve())


def test_bad_paths_and_types_fail_clearly(tmp_path, db, fake_store):
    ingestor = local_ingestor(db, fake_store, roots=[tmp_path.resolve()])
    with pytest.raises(InvalidInput, match="does not exist") as missing:
        ingestor.run(FileIngestRequest(path=tmp_path / "nope"))
    assert missing.value.field == "path"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match=r"no \S+ files"):
        ingestor.run(FileIngestRequest(path=empty))
    with pytest.raises(InvalidInput, match="unsupported file type") as bad_type:
        ingestor.run(FileIngestRequest(path=empty, file_types=["exe"]))
    assert bad_type.value.field == "file_types"
    with pytest.raises(PermissionDenied, match=r"outside the allowed roots \(/\S+; RAG_ALLOWED_ROOTS\)"):
        ingestor.run(FileIngestRequest(path=Path("/etc")))  # names the roots and the setting: the admin's next step
    assert fake_store.count() == 0


def test_symlink_escaping_the_root_is_refused(tmp_path, db, fake_store):
    """The escaping link is a per-file error; the legitimate file beside it is still ingested."""
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("top secret")
    (root / "link.txt").symlink_to(outside)
    (root / "ok.txt").write_text("a legitimate note beside the link")
    ingestor = local_ingestor(db, fake_store, roots=[root.resolve()])
    summary = ingestor.run(FileIngestRequest(path=root))
    assert [e["item"].endswith("link.txt") for e in summary.errors] == [True]
    texts = [r["text"] for r in fake_store.query("", ("text",))]
    assert texts and not any("top secret" in t for t in texts)


def test_acl_change_restamps_chunks(tmp_path, shared_data, db, fake_store):
    docs = copy_documents(shared_data, tmp_path)
    ingestor = local_ingestor(db, fake_store)
    ingestor.run(FileIngestRequest(path=docs, file_types=["txt"], acl=Acl("alice", (), "private")))
    ingestor.run(FileIngestRequest(path=docs, file_types=["txt"], acl=Acl("alice", ("team",), "group")))
    rows = fake_store.query("", ("visibility", "group_ids"))
    assert rows and all(r["visibility"] == "group" and r["group_ids"] == ["team"] for r in rows)


class RecordingStore(ChunkStore):
    """The same Milvus Lite collection, noting the order of upserts and seals (Milvus Lite reports neither)."""

    def __init__(self, store: ChunkStore) -> None:
        super().__init__(store.client, store.collection, store.dimension)
        self.ensure_collection()
        self.calls: list[str] = []

    def upsert(self, chunks, vectors):  # type: ignore[no-untyped-def]
        self.calls.append("upsert")
        return super().upsert(chunks, vectors)

    def seal_and_warm(self) -> None:
        super().seal_and_warm()
        self.calls.append("seal")


def test_a_job_seals_and_warms_what_it_wrote(tmp_path, shared_data, db, fake_store, caplog):
    """Milvus Lite scans unsealed rows on every BM25 search: a job that wrote chunks seals them and searches them
    once before it reports success; a job that wrote nothing leaves the collection alone."""
    store = RecordingStore(fake_store)
    ingestor = local_ingestor(db, store)
    request = FileIngestRequest(path=copy_documents(shared_data, tmp_path), acl=Acl("system", (), "public"))
    assert ingestor.run(request).status == "succeeded"
    assert store.calls.count("seal") == 1 and store.calls[-1] == "seal" and "upsert" in store.calls
    store.calls.clear()
    assert ingestor.run(request).chunks_written == 0
    assert store.calls == []

    store.drop()  # sealing is best effort: a failure is logged, never the writer's
    store.seal_and_warm()
    assert "sealing and warming" in caplog.text
