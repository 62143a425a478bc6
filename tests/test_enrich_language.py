"""Language labels on the shared sample documents and on synthetic Korean / English / mixed text."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from rag_ray.enrich.language import detect_language, script_counts
from rag_ray.text.chunking import chunk_text
from rag_ray.text.normalize import normalize_text

TEXT_DOCS = {
    "ko_babel_user_handbook.md": "ko",
    "ko_namuwiki_profile_excerpt.txt": "ko",
    "en_babel_user_handbook.md": "en",
    "en_war_and_peace_1p.txt": "en",
}
PDF_DOCS = {
    "ko_insurance_terms_2p.pdf": "ko",
    "ko_kbo_league_rules_table.pdf": "ko",
    "ko_card_benefits_tables.pdf": "ko",
    "en_layout_parser_paper_2p.pdf": "en",
}


def _read(shared_data: Path, name: str) -> str:
    path = shared_data / "documents" / name
    if path.suffix == ".pdf":
        from pypdf import PdfReader

        return "\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize(("name", "expected"), sorted((TEXT_DOCS | PDF_DOCS).items()))
def test_real_documents(shared_data: Path, name: str, expected: str) -> None:
    assert detect_language(_read(shared_data, name)) == expected


@pytest.mark.parametrize(("name", "expected"), sorted(TEXT_DOCS.items()))
def test_real_document_chunks_mostly_keep_the_document_language(shared_data: Path, name: str, expected: str) -> None:
    chunks = chunk_text(normalize_text(_read(shared_data, name)), 800, 100)
    labels = Counter(detect_language(c) for c in chunks)
    assert labels[expected] >= 0.9 * len(chunks), labels
    assert set(labels) <= {expected, "mixed"}  # code-heavy chunks never come out as some third language


def test_korean_paragraph_of_udhr(shared_data: Path) -> None:
    lines = _read(shared_data, "multi_udhr_article1_all_languages.txt").splitlines()
    korean = lines[lines.index("Korean") + 1]
    assert detect_language(korean) == "ko"


@pytest.mark.parametrize(("text", "expected"), [
    ("모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다.", "ko"),
    ("Ray Serve 배포는 autoscaling 설정을 통해 복제본 수를 자동으로 조절합니다.", "ko"),  # a few English terms
    ("All human beings are born free and equal in dignity and rights.", "en"),
    ("회의록: The quarterly review covers revenue and hiring. 다음 회의는 금요일입니다.", "mixed"),
    ("Please read the attached report before the meeting tomorrow. 첨부한 보고서를 읽어 주세요.", "mixed"),
    ("Tous les êtres humains naissent libres et égaux en dignité et en droits.", "fr"),
    ("Alle Menschen sind frei und gleich an Würde und Rechten geboren.", "de"),
    ("Все люди рождаются свободными и равными в своем достоинстве и правах.", "ru"),
    ("すべての人間は、生まれながらにして自由であり、かつ、尊厳と権利とについて平等である。", "ja"),
    ("人人生而自由，在尊严和权利上一律平等。", "zh"),
    ("Όλοι οι άνθρωποι γεννιούνται ελεύθεροι και ίσοι στην αξιοπρέπεια και τα δικαιώματα.", "el"),
    ("", "unknown"),
    ("12345 - 67.89 %", "unknown"),
    # rendered database rows: column labels are identifiers, not the row's language
    ("table: Review\nReviewId: 3\nBody: The parcel arrived late and the box was damaged.", "en"),
    ("table: Notiz\nNotizId: 7\nText: Alle Menschen sind frei und gleich an Würde und Rechten geboren.", "de"),
    # too little (or only capitalised) Latin text for a statistical guess: names, titles, addresses
    ("table: Artist\nArtistId: 54\nName: Green Day", "unknown"),
    ("table: Customer\nCustomerId: 1\nFirstName: Luís\nLastName: Gonçalves\nCompany: Embraer - Empresa "
     "Brasileira de Aeronáutica S.A.\nAddress: Av. Brigadeiro Faria Lima, 2170\nCity: São José dos Campos", "unknown"),
])
def test_synthetic(text: str, expected: str) -> None:
    assert detect_language(text) == expected


def test_code_and_urls_do_not_count_as_english() -> None:
    text = "설치 방법은 다음과 같습니다:\n```sh\nnpm install --save-dev babel-cli babel-preset-env\n```\n" \
           "자세한 내용은 https://babeljs.io/docs/en/babel-cli 문서를 참고하세요."
    assert detect_language(text) == "ko"
    assert script_counts(text)["latin"] == 0


def test_chunk_starting_inside_a_code_block() -> None:
    text = '  "presets": ["env", "react"]\n}\n```\n\n이제 Babel을 실행하면 설정 파일의 프리셋이 적용됩니다. ' \
           "설정은 프로젝트 루트에 둡니다.\n\n```js\nconst x = require('y');"
    assert detect_language(text) == "ko"


def test_deterministic() -> None:
    text = "Ein kurzer Satz auf Deutsch über die Würde des Menschen."
    assert {detect_language(text) for _ in range(5)} == {"de"}
