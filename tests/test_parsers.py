import logging
import os
import warnings
from pathlib import Path

import docx
import openpyxl
import pytest

from rag_ray.errors import InvalidInput, PayloadTooLarge, SourceError
from rag_ray.sources.files import (
    PARSERS,
    SUPPORTED_TYPES,
    decode_text,
    file_type,
    markdown_title,
    parse_bytes,
    parse_file,
    sheet_lines,
)
from rag_ray.text.chunking import chunk_text
from rag_ray.text.normalize import normalize_text
from tests.paths import SHARED_DATA

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data not found at {SHARED_DATA}")

DOCUMENTS = sorted(p for p in SHARED_DATA.glob("*") if p.name != "SOURCE.md") if SHARED_DATA.is_dir() else []


def parse(name: str):
    return parse_file(SHARED_DATA / name)


# ---- every real file ----
@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_shared_document_parses_to_normalised_text(path: Path):
    doc = parse_file(path)
    assert doc.source_uri == os.path.abspath(path)
    assert doc.text.strip()
    assert normalize_text(doc.text) == doc.text
    assert "\t" not in doc.text and "\x00" not in doc.text
    meta = doc.metadata
    assert meta["file_type"] == path.suffix.lstrip(".") and meta["file_name"] == path.name
    assert meta["size_bytes"] == path.stat().st_size
    assert all(len(chunk) <= 800 for chunk in chunk_text(doc.text))


def test_all_shared_types_are_supported():
    assert {p.suffix.lstrip(".") for p in DOCUMENTS} <= SUPPORTED_TYPES
    assert {"txt", "md", "markdown", "pdf", "docx", "xlsx"} == SUPPORTED_TYPES == set(PARSERS.names())


# ---- pdf ----
def test_korean_insurance_pdf():
    doc = parse("ko_insurance_terms_2p.pdf")
    assert doc.metadata["pages"] == 2 and doc.metadata["empty_pages"] == 0
    assert doc.text.startswith("【보통약관】 제1관 목적 및 용어의 정의")
    assert "제1조(목적) 이 보험계약(이하 ‘계약’이라 합니다)은 보험계약자(이하 ‘계약자’라 합니다)와" in doc.text
    assert "마. 피보험자: 보험사고의 대상이 되는 사람을 말합니다." in doc.text
    assert "제4조(보험금 지급에 관한 세부규정)" in doc.text  # page 2


def test_korean_kbo_rules_pdf():
    doc = parse("ko_kbo_league_rules_table.pdf")
    assert doc.metadata["pages"] == 1
    assert "제21조 주·야간경기 및 경기개시 시간" in doc.text
    assert "제22조 경기시간 제한" in doc.text
    assert "단, 조명시설이 있는 구장에서는 점등한 후 경기를 속행한다." in doc.text
    assert "title" not in doc.metadata  # its /Title is just the file name "2024_리그규정.pdf"


def test_korean_card_pdf_tabs_become_spaces():
    doc = parse("ko_card_benefits_tables.pdf")
    assert "* 적립 혜택은 매출전표 접수 시점 기준으로 적용" in doc.text
    assert "할인점 이마트, 이마트 트레이더스, 롯데마트, 홈플러스" in doc.text
    assert "적립\t혜택은" not in doc.text


def test_english_paper_pdf_ligatures_and_nul_gone():
    doc = parse("en_layout_parser_paper_2p.pdf")
    assert doc.metadata["pages"] == 2
    assert doc.text.startswith("LayoutParser: A Unified Toolkit for Deep")
    assert "specification" in doc.text and "difficulties" in doc.text  # ﬁ (U+FB01) and ﬃ (U+FB03)
    assert "\ufb01" not in doc.text and "\ufb03" not in doc.text
    assert "Zejiang Shen1 ( )" in doc.text  # the PDF has a NUL inside the parentheses


def test_pdf_parsing_is_quiet(caplog, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doc = parse("en_reliance_annual_report_3p.pdf")  # pypdf would log "fontTools is required…"
    assert doc.metadata["pages"] == 3
    assert "Integrated Annual Report 2021-22" in doc.text
    assert "Reliance Industries Limited (RIL)" in doc.text
    assert not [r for r in caplog.records if r.name.startswith("pypdf") and r.levelno < logging.ERROR]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_pdf_page_without_text_is_counted(tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    path = tmp_path / "blank.pdf"
    with path.open("wb") as handle:
        writer.write(handle)
    doc = parse_file(path)
    assert doc.text == ""
    assert doc.metadata["pages"] == 1 and doc.metadata["empty_pages"] == 1


# ---- docx ----
def test_docx_handbook_headings_and_paragraphs():
    doc = parse("en_ust_handbook_1p.docx")
    blocks = doc.text.split("\n\n")
    assert len(blocks) == 13  # 13 non-empty paragraphs, no tables
    assert blocks[:4] == ["CHAPTER 1", "INTRODUCTION", "CHAPTER 1 – INTRODUCTION", "A. PURPOSE"]
    assert "B. ROLE OF THE UNITED STATES TRUSTEE" in blocks
    assert "C. STATUTORY DUTIES OF A STANDING TRUSTEE" in blocks
    assert blocks[4].startswith("The United States Trustee appoints and supervises standing trustees")


def test_docx_tables_and_heading_styles_in_document_order(tmp_path):
    document = docx.Document()
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Intro paragraph.")
    table = document.add_table(rows=3, cols=3)
    for row, values in zip(table.rows, [("Team", "City", "Cups"), ("Blues", "STL", "1"), ("", "", "")], strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    merged = document.add_table(rows=1, cols=3)
    merged.cell(0, 0).merge(merged.cell(0, 1)).text = "wide"
    merged.cell(0, 2).text = "narrow"
    document.add_heading("Details", level=2)
    document.add_paragraph("Closing words.")
    path = tmp_path / "report.docx"
    document.save(str(path))

    doc = parse_file(path)
    assert doc.text.split("\n\n") == [
        "# Quarterly report", "Intro paragraph.", "Team | City | Cups\nBlues | STL | 1", "wide | narrow",
        "## Details", "Closing words.",
    ]
    assert doc.metadata["title"] == "Quarterly report"


# ---- xlsx ----
def test_stanley_cups_exact():
    doc = parse("en_stanley_cups.xlsx")
    assert doc.metadata["sheets"] == 2
    assert doc.metadata["sheet_names"] == ["Stanley Cups", "Stanley Cups Since 67"]
    assert doc.text == (
        "## Sheet: Stanley Cups\n"
        "Stanley Cups\n"
        "Team: Blues; Location: STL; Stanley Cups: 1\n"
        "Team: Flyers; Location: PHI; Stanley Cups: 2\n"
        "Team: Maple Leafs; Location: TOR; Stanley Cups: 13\n"
        "\n"
        "## Sheet: Stanley Cups Since 67\n"
        "Stanley Cups Since 67\n"
        "Team: Blues; Location: STL; Stanley Cups: 1\n"
        "Team: Flyers; Location: PHI; Stanley Cups: 2\n"
        "Team: Maple Leafs; Location: TOR; Stanley Cups: 0"
    )


def test_half_year_segments_all_sheets_with_real_header_row():
    doc = parse("en_half_year_2023_segments.xlsx")
    assert doc.metadata["sheets"] == 5
    assert doc.text.count("## Sheet: ") == 5
    assert "## Sheet: Reconciliation 30 06 2023" in doc.text
    # The column titles, not the "In millions of CHF" title row above them, name the values.
    assert "Zone NA; Sales (a): 12553; Underlying Trading operating profit (b): 2713" in doc.text
    assert "January–June 2023: 7904; January–June 2022: 7683" in doc.text


def test_vodafone_index_skips_blank_rows_and_repeated_headers():
    doc = parse("en_vodafone_q1fy24_index.xlsx")
    assert doc.metadata["sheet_names"] == ["Index"]
    assert "Topic: Quarterly revenue; Period: Nine quarters to 30 June 2023; Page: 1" in doc.text
    assert "Topic: Topic" not in doc.text
    assert "\n\n" not in doc.text  # one sheet, no empty-row lines


def test_sheet_lines_rules():
    rows = [(None, None), ("Title", None), ("A", "B", "C"), (1.0, None, "x"), (None, None, None), (2.5, "y", None)]
    assert list(sheet_lines(rows)) == ["Title", "A: 1; C: x", "A: 2.5; B: y"]
    assert list(sheet_lines([("Only",), ("one",), ("column",)])) == ["Only: one", "Only: column"]
    assert list(sheet_lines([])) == []


def test_xlsx_values_are_formatted(tmp_path):
    import datetime as dt

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "데이터"
    sheet.append(["이름", "날짜", "참", "비고"])
    sheet.append(["홍길동", dt.datetime(2024, 3, 1), True, "여러\n줄"])
    workbook.create_sheet("empty")
    path = tmp_path / "book.xlsx"
    workbook.save(path)
    doc = parse_file(path)
    assert doc.text == "## Sheet: 데이터\n이름: 홍길동; 날짜: 2024-03-01; 참: TRUE; 비고: 여러 줄"
    assert doc.metadata["sheets"] == 2


# ---- txt / md ----
def test_korean_txt():
    doc = parse("ko_namuwiki_profile_excerpt.txt")
    assert doc.metadata["encoding"] == "utf-8"
    assert doc.text.startswith("6.2. 취향[편집]\n화창하고 시원한 바람이 부는 선선한 날씨를 좋아한다.")
    assert "'처연하다'[51]라는 말을 좋아한다." in doc.text


def test_english_txt():
    doc = parse("en_war_and_peace_1p.txt")
    assert doc.text.startswith('CHAPTER I\n\n"Well, Prince, so Genoa and Lucca are now just family estates of the')
    assert "title" not in doc.metadata


def test_multilingual_txt_keeps_korean():
    doc = parse("multi_udhr_article1_all_languages.txt")
    assert "Korean\n모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다." in doc.text
    assert "是人都生而自由" in doc.text


@pytest.mark.parametrize(("data", "text", "encoding"), [
    ("한국어 문장입니다.".encode("cp949"), "한국어 문장입니다.", "cp949"),
    ("\ufeffbom text".encode(), "bom text", "utf-8-sig"),
    ("utf16 한글".encode("utf-16"), "utf16 한글", "utf-16"),
    ("café “quoted”".encode("cp1252"), "café “quoted”", "cp1252"),
    (b"caf\xe9 \x81", "caf\xe9 \x81", "latin-1"),
])
def test_text_encodings(data, text, encoding):
    assert decode_text(data) == (text, encoding)


def test_markdown_english_title_and_comments_removed():
    doc = parse("en_babel_user_handbook.md")
    assert doc.metadata["title"] == "Babel User Handbook"
    assert doc.text.startswith("# Babel User Handbook\n\nWritten by [Jamie Kyle](https://jamie.build/)")
    assert "<!--" not in doc.text and "### Code Coverage" not in doc.text  # inside HTML comments
    assert "# <a id=\"toc-introduction\"></a>Introduction" in doc.text  # markdown itself is kept


def test_markdown_korean():
    doc = parse("ko_babel_user_handbook.md")
    assert doc.metadata["title"] == "Babel User Handbook"
    assert "이 문서는 모든 [Babel](https://babeljs.io)과 관련된 도구를 사용하는 방법에 대해 설명합니다." in doc.text
    assert "# 목차" in doc.text


def test_markdown_title_ignores_code_fences_and_html():
    text = "intro\n```sh\n# not a title\n```\n## Sub\n# <a id=\"x\"></a>Real Title #\n"
    assert markdown_title(text) == "Real Title"
    assert markdown_title("no heading") is None


# ---- uploads ----
def test_parse_bytes_matches_parse_file():
    path = SHARED_DATA / "ko_insurance_terms_2p.pdf"
    uploaded = parse_bytes(path.read_bytes(), "uploads/../약관.PDF")
    assert uploaded.text == parse_file(path).text
    assert uploaded.metadata["file_name"] == "약관.PDF" and uploaded.metadata["file_type"] == "pdf"
    assert uploaded.source_uri == "upload://약관.PDF"
    assert parse_bytes(b"hello", "a.txt", source_uri="s3://bucket/a.txt").source_uri == "s3://bucket/a.txt"


def test_parse_bytes_korean_text():
    doc = parse_bytes("첫 줄\t둘째  단어\r\n".encode(), "memo.txt")
    assert doc.text == "첫 줄 둘째 단어" and doc.metadata["size_bytes"] == len("첫 줄\t둘째  단어\r\n".encode())


# ---- errors ----
@pytest.mark.parametrize("suffix", [".pdf", ".docx", ".xlsx"])
def test_corrupt_file_is_a_source_error(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"\x00\xffthis is not a real document" * 20)
    with pytest.raises(SourceError) as info:
        parse_file(path)
    assert str(path) in info.value.message
    assert info.value.details["path"] == str(path) and info.value.details["reason"]
    with pytest.raises(SourceError):
        parse_bytes(path.read_bytes(), path.name)


def test_truncated_pdf_is_a_source_error(tmp_path):
    path = tmp_path / "truncated.pdf"
    path.write_bytes(b"%PDF-1.7\n")
    with pytest.raises(SourceError):
        parse_file(path)


@pytest.mark.parametrize("name", ["slides.pptx", "archive.tar.gz", "README"])
def test_unknown_extension_is_invalid_input(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"x")
    with pytest.raises(InvalidInput) as info:
        parse_file(path)
    assert info.value.field == "file_type"
    assert "docx, markdown, md, pdf, txt, xlsx" in info.value.message
    with pytest.raises(InvalidInput):
        parse_bytes(b"x", name)


def test_file_too_big(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("x" * 101)
    with pytest.raises(InvalidInput) as info:
        parse_file(path, max_bytes=100)
    assert info.value.field == "max_file_bytes" and isinstance(info.value, PayloadTooLarge)
    assert parse_file(path, max_bytes=101).text == "x" * 101
    with pytest.raises(InvalidInput):
        parse_bytes(b"x" * 101, "big.txt", max_bytes=100)


def test_missing_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceError) as info:
        parse_file(tmp_path / "nope.pdf")
    assert "nope.pdf" in info.value.message


def test_source_errors_pickle(tmp_path):
    import pickle

    path = tmp_path / "bad.xlsx"
    path.write_bytes(b"garbage")
    with pytest.raises(SourceError) as info:
        parse_file(path)
    clone = pickle.loads(pickle.dumps(info.value))
    assert clone.message == info.value.message and clone.details == info.value.details


def test_file_type():
    assert file_type("a/B.PDF") == "pdf"
    assert file_type(Path("x.tar.gz")) == "gz"
    assert file_type("noext") == ""
