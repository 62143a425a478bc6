"""Offline entity extraction: kiwipiepy proper nouns + rules for Korean, a capitalisation heuristic for English."""

from __future__ import annotations

from pathlib import Path

from rag_ray.enrich.entities import MAX_PER_KIND, extract_entities


def test_korean_people_organisations_places() -> None:
    found = extract_entities("삼성전자 이재용 회장은 서울 강남구에서 김철수 과장과 만났다. 네이버와 카카오도 참석했다. "
                             "한국은행은 금리를 동결했다.")
    assert found["person"] == ["이재용", "김철수"]
    assert found["organization"] == ["삼성전자", "네이버", "카카오", "한국은행"]
    assert found["location"] == ["서울", "강남구"]


def test_english_people_organisations_places() -> None:
    found = extract_entities("Dr. Jane Goodall visited the University of Cambridge and met Tim Cook of Apple Inc. "
                             "in New York. The Bank of Korea raised rates. Later, Mr. Smith flew to Paris.")
    assert found["person"] == ["Jane Goodall", "Smith"]
    assert found["organization"] == ["University of Cambridge", "Apple Inc.", "Bank of Korea"]
    assert found["location"] == ["New York", "Paris"]
    assert found["misc"] == ["Tim Cook"]  # a name with no cue: found, but not typed


def test_war_and_peace(shared_data: Path) -> None:
    found = extract_entities((shared_data / "documents" / "en_war_and_peace_1p.txt").read_text(encoding="utf-8"))
    assert {"Anna Pavlovna", "Vasili Kuragin"} <= set(found["person"])  # "Prince Vasili Kuragin": title stripped
    assert "St. Petersburg" in found["location"]
    assert not {"July", "French", "Prince", "Count"} & {n for names in found.values() for n in names}


def test_korean_document_has_no_people_invented(shared_data: Path) -> None:
    found = extract_entities((shared_data / "documents" / "ko_namuwiki_profile_excerpt.txt").read_text(
        encoding="utf-8"))
    assert found["person"] == [] and found["organization"] == []
    assert "아보카도" not in found["location"]  # a fruit ending in 도 is not a province
    assert "하와이" in found["location"]


def test_sentence_initial_words_are_not_names() -> None:
    assert extract_entities("However, results vary. Results were significant. This is fine.") == {
        "person": [], "organization": [], "location": [], "misc": []}


def test_caps_and_dedup() -> None:
    text = " ".join(f"met Mr. Smith{chr(97 + i % 26)}{chr(97 + i // 26)} today." for i in range(60))
    found = extract_entities(text)
    assert len(found["person"]) == MAX_PER_KIND
    assert extract_entities("Mr. Smith and Mr. Smith")["person"] == ["Smith"]
