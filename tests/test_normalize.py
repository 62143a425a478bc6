import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from rag_ray.text.normalize import normalize_text


def test_ligature_becomes_plain_letters():
    assert normalize_text("A Uniﬁed Toolkit") == "A Unified Toolkit"


def test_tabs_and_odd_spaces_between_words_become_one_space():
    assert normalize_text("적립\t혜택은\t매출전표\t\t접수") == "적립 혜택은 매출전표 접수"
    assert normalize_text("a\u00a0b\u3000c\u2009d   e") == "a b c d e"


def test_paragraph_breaks_kept_and_blank_runs_collapsed():
    assert normalize_text("one\ntwo\n\n\n\n three  \n \nfour") == "one\ntwo\n\n three\n\nfour"


def test_windows_and_mac_line_endings():
    assert normalize_text("a\r\nb\rc") == "a\nb\nc"


def test_control_characters_and_nul_dropped():
    assert normalize_text("Shen1 (\x00 ) x\x07y\x1b") == "Shen1 ( ) xy"
    assert normalize_text("\ufeffbom\u200bzero\u00adsoft") == "bomzerosoft"


def test_form_feed_is_a_paragraph_break():
    assert normalize_text("page one\fpage two") == "page one\n\npage two"


def test_trailing_spaces_per_line_and_outer_whitespace_stripped():
    assert normalize_text("  \n\n line one   \nline two\t\n\n  ") == "line one\nline two"


def test_indentation_inside_the_text_is_kept():
    assert normalize_text("code:\n    x = 1\n\tdef f():") == "code:\n    x = 1\n    def f():"


def test_korean_intact():
    text = "모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다."
    assert normalize_text(text) == text


def test_decomposed_hangul_is_composed():
    decomposed = unicodedata.normalize("NFD", "한국어")
    assert normalize_text(decomposed) == "한국어"


def test_compatibility_jamo_and_circled_numbers_survive_nfkc():
    # Plain NFKC would turn ㅋ into conjoining ᄏ and ① into 1.
    assert normalize_text("ㅋㅋ 진짜요 ① 제2항") == "ㅋㅋ 진짜요 ① 제2항"


def test_fullwidth_forms_folded():
    assert normalize_text("ＡＢＣ１２３（주）") == "ABC123(주)"


def test_surrogates_repaired_or_dropped():
    assert normalize_text("\ud83d\ude00 ok \ud800") == "😀 ok"


def test_empty_and_blank():
    assert normalize_text("") == ""
    assert normalize_text(" \t\n\r\n ") == ""


@given(st.text())
def test_idempotent(text):
    once = normalize_text(text)
    assert normalize_text(once) == once


@given(st.text())
def test_output_has_no_control_characters_or_tabs_or_trailing_spaces(text):
    out = normalize_text(text)
    assert "\t" not in out and "\r" not in out and "\x00" not in out
    assert all(ch == "\n" or unicodedata.category(ch) != "Cc" for ch in out)
    assert "\n\n\n" not in out
    assert all(line == line.rstrip() for line in out.split("\n"))
    assert out == out.strip()
    out.encode("utf-8")  # always encodable: no lone surrogates


@given(st.lists(st.sampled_from(["가", "나다", "한국어", "word", " ", "\t", "\n", "。", "."]), max_size=40))
def test_words_survive_in_order(pieces):
    text = "".join(pieces)
    assert normalize_text(text).split() == text.split()
