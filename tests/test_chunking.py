import itertools
import pickle
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag_ray.errors import InvalidInput
from rag_ray.text.chunking import Chunker, chunk_spans, chunk_text, is_safe_cut
from rag_ray.text.normalize import normalize_text
from tests.paths import SHARED_DATA

KOREAN = (
    "모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다. "
    "인간은 천부적으로 이성과 양심을 부여받았으며 서로 형제애의 정신으로 행동하여야 한다. "
    "노래 듣는 것을 매우 좋아해요. 산책을 하면서 노래를 듣거나 조깅을 한다고 합니다."
)

WORDS = st.sampled_from([
    "word", "sentence.", "end!", "why?", "가나다", "좋아한다.", "해요.", "합니다.", "中文。", "e\u0301", "ﬁ",
    "😀", "👍🏽", "👨\u200d👩\u200d👧", "\u1100\u1161\u11a8", "ㅋㅋ", "3.14", "a" * 30,
])
SEPARATORS = st.sampled_from([" ", " ", " ", "\n", "\n\n", "  ", "", "\t"])
TEXTS = st.lists(st.tuples(WORDS, SEPARATORS), max_size=200).map(lambda parts: "".join(w + s for w, s in parts))
CONFIGS = st.integers(min_value=50, max_value=300).flatmap(
    lambda size: st.tuples(st.just(size), st.integers(min_value=0, max_value=size - 1)))


def assert_valid_spans(text, spans, size, overlap):
    if not text.strip():
        assert spans == []
        return
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (start, end), (next_start, next_end) in itertools.pairwise(spans):
        assert next_start > start and next_end > end  # progress
        assert next_start <= end  # no gap: every character covered
        assert end - next_start <= overlap  # overlap bound
    for start, end in spans:
        assert 0 < end - start <= size
    rebuilt = text[: spans[0][1]] + "".join(text[prev_end:end] for (_, prev_end), (_, end) in itertools.pairwise(spans))
    assert rebuilt == text


@settings(max_examples=300, deadline=None)
@given(TEXTS, CONFIGS)
def test_spans_cover_text_within_bounds(text, config):
    size, overlap = config
    assert_valid_spans(text, chunk_spans(text, size, overlap), size, overlap)


@settings(max_examples=200, deadline=None)
@given(st.text(), CONFIGS)
def test_spans_cover_arbitrary_unicode(text, config):
    size, overlap = config
    assert_valid_spans(text, chunk_spans(text, size, overlap), size, overlap)


@settings(max_examples=200, deadline=None)
@given(TEXTS, CONFIGS)
def test_chunks_are_the_span_slices_and_never_cut_a_grapheme(text, config):
    size, overlap = config
    spans = chunk_spans(text, size, overlap)
    chunks = chunk_text(text, size, overlap)
    assert chunks == [text[s:e] for s, e in spans if text[s:e].strip()]
    for start, end in spans:
        assert is_safe_cut(text, start) and is_safe_cut(text, end)
        assert not unicodedata.combining(text[start])


@settings(max_examples=100, deadline=None)
@given(TEXTS, CONFIGS)
def test_deterministic(text, config):
    assert chunk_text(text, *config) == chunk_text(text, *config)


@settings(max_examples=100, deadline=None)
@given(TEXTS)
def test_overlap_zero_partitions_the_text(text):
    spans = chunk_spans(text, 60, 0)
    assert "".join(text[s:e] for s, e in spans) == (text if text.strip() else "")


def test_short_text_is_one_chunk():
    assert chunk_text("Hello world.", 800, 100) == ["Hello world."]


@pytest.mark.parametrize("text", ["", " ", "\n\n\t  \n"])
def test_empty_or_blank_gives_nothing(text):
    assert chunk_text(text) == []
    assert chunk_spans(text) == []


def test_prefers_paragraph_breaks():
    para1 = "First paragraph sentence one. Sentence two is here."
    para2 = "Second paragraph is a bit longer than the first one, on purpose."
    chunks = chunk_text(f"{para1}\n\n{para2}", size=80, overlap=0)
    assert chunks == [f"{para1}\n\n", para2]


def test_prefers_sentence_end_over_whitespace():
    text = "The first sentence ends here. The second sentence is long enough to overflow the chunk."
    chunks = chunk_text(text, size=60, overlap=0)
    assert chunks[0] == "The first sentence ends here. "


def test_korean_sentence_endings():
    chunks = chunk_text(KOREAN, size=80, overlap=0)
    assert "".join(chunks) == KOREAN
    assert all(len(chunk) <= 80 for chunk in chunks)
    assert chunks[0].rstrip().endswith("동등하다.")
    assert all(chunk.rstrip()[-1] in ".다" for chunk in chunks[:-1])


def test_korean_endings_without_space_and_ideographic_full_stop():
    text = "노래 듣는 것을 매우 좋아한다.산책하는 것도 좋아한다." * 4
    first = chunk_text(text, size=50, overlap=0)[0]
    assert first.endswith("좋아한다.")
    cjk = "他们赋有理性和良心。并应以弟兄关系的精神相对待。" * 4
    assert chunk_text(cjk, size=50, overlap=0)[0].endswith("。")


def test_overlap_starts_at_a_word_or_sentence():
    text = " ".join(f"Sentence number {i} has several words in it." for i in range(40))
    chunks = chunk_text(text, size=200, overlap=60)
    assert len(chunks) > 1
    for previous, chunk in itertools.pairwise(chunks):
        assert chunk.startswith("Sentence number")  # a sentence start fits in every overlap window
        shared = next(k for k in range(min(60, len(previous)), -1, -1) if previous.endswith(chunk[:k]))
        assert shared > 0


def test_text_without_spaces_is_hard_cut_at_safe_positions():
    text = "가나다라마바사" * 100  # no whitespace anywhere
    spans = chunk_spans(text, size=50, overlap=10)
    assert_valid_spans(text, spans, 50, 10)
    decomposed = unicodedata.normalize("NFD", "한국어") * 100  # conjoining jamo, 3 per syllable
    for start, end in chunk_spans(decomposed, size=50, overlap=10):
        assert is_safe_cut(decomposed, start) and is_safe_cut(decomposed, end)
        assert "\u1100" <= decomposed[start] <= "\u1112"  # every chunk starts with a leading consonant
        assert not ("\u1161" <= decomposed[start] <= "\u11ff")  # never starts with a vowel/final jamo


def test_combining_marks_and_emoji_sequences_not_split():
    text = ("e\u0301" * 40) + ("👨\u200d👩\u200d👧" * 20)
    for start, end in chunk_spans(text, size=50, overlap=7):
        assert is_safe_cut(text, start) and is_safe_cut(text, end)


def test_pathological_grapheme_longer_than_a_chunk_still_respects_size():
    text = "a" + "\u0301" * 200
    assert all(len(chunk) <= 50 for chunk in chunk_text(text, size=50, overlap=0))


def test_real_korean_document_chunks(shared_korean_text):
    chunks = chunk_text(shared_korean_text, size=300, overlap=50)
    assert_valid_spans(shared_korean_text, chunk_spans(shared_korean_text, 300, 50), 300, 50)
    assert any("처연하다" in chunk for chunk in chunks)


@pytest.fixture
def shared_korean_text():
    return normalize_text((SHARED_DATA / "ko_namuwiki_profile_excerpt.txt").read_text(encoding="utf-8"))


@pytest.mark.parametrize(("size", "overlap", "field"), [
    (49, 0, "chunk_size"), (0, 0, "chunk_size"), (800, -1, "chunk_overlap"), (100, 100, "chunk_overlap"),
    (100, 150, "chunk_overlap"),
])
def test_invalid_configuration(size, overlap, field):
    with pytest.raises(InvalidInput) as info:
        chunk_text("text", size, overlap)
    assert info.value.field == field
    with pytest.raises(InvalidInput):
        Chunker(size, overlap)


def test_chunker_dataclass():
    chunker = Chunker(size=100, overlap=20)
    text = "Some words here. " * 30
    assert chunker.split(text) == chunk_text(text, 100, 20)
    assert chunker.spans(text) == chunk_spans(text, 100, 20)
    assert pickle.loads(pickle.dumps(chunker)) == chunker
    assert Chunker().size == 800 and Chunker().overlap == 100


def test_large_input_is_linear_enough():
    text = ("한국어 문장입니다. English sentence here. " * 20 + "\n\n") * 500  # ~400k chars
    chunks = chunk_text(text, 800, 100)
    assert all(len(chunk) <= 800 for chunk in chunks)
    assert len(chunks) > len(text) // 800
