"""Named entities (people, organisations, places) found offline, for the ``comprehensive`` level only.

What is supported, and how well:

- **Korean** (text containing Hangul): proper nouns come from kiwipiepy's morphological analysis (tag ``NNP``;
  the model ships with the package, nothing is downloaded). Kiwi does not say *which kind* of proper noun, so a
  rule decides: a title or honorific right after it (회장, 과장, 교수, 씨, 님, ...) or the shape "common surname +
  two syllables" → person; a place suffix (시/도/구/군/동/읍/면/로/길/역) or a short gazetteer (서울, 부산, 미국,
  ...) → location; an organisation suffix (전자, 은행, 그룹, 대학교, 공사, 재단, 협회, 위원회, ...), a preceding
  ``(주)``/``주식회사`` or a short gazetteer (삼성, 네이버, 카카오, ...) → organization. Other proper nouns go to
  ``misc``.
- **English** (and the Latin parts of mixed text): a capitalisation heuristic. Runs of Capitalised words (joined
  by of/the/and/&/for) that are not a lone sentence-initial word; a title before them (Mr, Dr, Prof, President,
  ...) or a common given name as first word → person; an organisation suffix (Inc, Corp, Ltd, University, Bank,
  Institute, Ministry, ...) → organization; a place suffix (City, County, River, Street, ...) or a gazetteer of
  countries and large cities → location; anything else → ``misc``.
- Other languages: nothing.

This is a cheap labeller for filtering and faceting, not a trained NER model: expect misses on names without
cues and some ``misc`` noise; precision beats recall in the rules. Each list is de-duplicated (first occurrence
order) and capped at :data:`MAX_PER_KIND`.
"""

from __future__ import annotations

import re
import threading
import warnings
from typing import Any

ENTITY_KINDS = ("person", "organization", "location", "misc")
MAX_PER_KIND = 20


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ---- Korean rules ----
_KO_PERSON_TITLES = _words(
    "씨 님 군 양 회장 부회장 사장 부사장 대표 과장 부장 차장 대리 팀장 실장 "
    "본부장 이사 상무 전무 교수 박사 선생 선생님 의원 장관 차관 대통령 총리 "
    "시장 지사 감독 코치 선수 기자 변호사 검사 판사 원장 총장 주임 사원 작가"
)
_KO_SURNAMES = frozenset(
    "김이박최정강조윤장임한오서신권황안송류유전홍고문양손배백허남심노하곽성차주우구민진나엄채원천방공현함변염여추도소석선설마길연위표명기반"
    "왕금옥육인맹제모탁국어은편용예경봉사부가복태목형피두감음빈동온호범좌"
)
_KO_PLACE_SUFFIXES_LONG = ("특별시", "광역시", "특별자치시", "특별자치도", "공항")
_KO_PLACE_SUFFIXES = ("특별시", "광역시", "시", "도", "구", "군", "동", "읍", "면", "로", "길", "역", "항", "공항")
_KO_PLACES = _words(
    "서울 부산 대구 인천 광주 대전 울산 세종 제주 경기 강원 충북 충남 전북 "
    "전남 경북 경남 한국 대한민국 북한 미국 중국 일본 영국 프랑스 독일 러시아 "
    "캐나다 호주 인도 베트남 유럽 아시아 아프리카 뉴욕 도쿄 베이징 런던 파리 "
    "워싱턴 하와이 강남 판교"
)
_KO_ORG_SUFFIXES = tuple(sorted(_words(
    "전자 그룹 은행 증권 보험 생명 화재 카드 캐피탈 대학교 대학 공사 공단 재단 협회 연구원 "
    "연구소 위원회 학회 병원 방송 일보 신문 건설 제약 자동차 중공업 화학 통신 청 구단 부처"
)))
_KO_ORGS = _words(
    "삼성 네이버 카카오 현대 기아 엘지 롯데 한화 포스코 신세계 쿠팡 배민 KBO "
    "KBS MBC SBS EBS 국회 정부 금융위원회 금감원 국세청 경찰청 검찰 "
    "법원 헌법재판소 유엔 구글 애플 마이크로소프트 아마존 메타 엔비디아 테슬라"
)
_KO_ORG_PREFIXES = ("(주)", "㈜", "주식회사")

# ---- English rules ----
_EN_PERSON_TITLES = _words(
    "mr mr. mrs mrs. ms ms. dr dr. prof prof. professor president ceo sir lady lord prince princess king queen "
    "count countess duke senator governor minister chancellor judge general captain pope madame monsieur "
    "mister miss emperor empress tsar"
)
_EN_GIVEN_NAMES = _words(
    "james john robert michael william david richard joseph thomas charles christopher daniel matthew anthony mark "
    "donald steven paul andrew joshua kenneth kevin brian george timothy ronald edward jason jeffrey ryan jacob "
    "gary nicholas eric jonathan stephen larry justin scott brandon benjamin samuel gregory frank alexander "
    "patrick jack dennis peter henry carl arthur mary patricia jennifer linda elizabeth barbara susan jessica "
    "sarah karen lisa nancy betty margaret sandra ashley kimberly emily donna michelle carol amanda melissa "
    "deborah stephanie rebecca sharon laura cynthia kathleen amy angela anna emma olivia sophia alice maria "
    "anne helen natasha pierre andrew anatole hippolyte vasili anna"
)
_EN_ORG_SUFFIXES = _words(
    "inc inc. corp corp. corporation ltd ltd. llc plc co co. company group bank university institute foundation "
    "association agency ministry department committee council commission society press industries laboratory "
    "laboratories labs school college hospital center centre organization organisation federation union "
    "authority bureau office trust fund partners holdings systems technologies network club"
)
_EN_PLACE_SUFFIXES = _words(
    "city county river mountain mountains street avenue road island islands lake ocean sea province state valley "
    "bay coast peninsula district region"
)
_EN_PLACES = _words(
    "korea seoul busan japan tokyo china beijing shanghai india russia moscow france paris germany berlin italy "
    "rome spain madrid england london britain scotland ireland canada toronto mexico brazil australia sydney "
    "america usa u.s. washington california texas new york boston chicago europe asia africa petersburg "
    "vienna austria switzerland netherlands sweden norway denmark finland poland ukraine egypt israel turkey "
    "singapore vietnam thailand indonesia taiwan hong kong"
) | {"new york", "hong kong", "united states", "united kingdom", "south korea", "north korea", "san francisco",
     "los angeles", "st. petersburg", "petersburg"}
_EN_OF_HEADS = _EN_ORG_SUFFIXES | _EN_PLACE_SUFFIXES | {"republic", "kingdom", "gulf", "isle", "port"}
_EN_NOT_NAMES = _words(
    "january february march april may june july august september october november december monday tuesday "
    "wednesday thursday friday saturday sunday english french german russian italian spanish chinese japanese "
    "korean american british european asian african christian god lord"
)
_EN_SENTENCE_STARTERS = _words(
    "the a an this that these those it in on at for from with by as but and or if when while after before "
    "during however although because since we our they their he she his her i you there here what which who "
    "how why all some many most each every no not yes"
)
# a capitalised word, an acronym, or an abbreviation that keeps its period inside a name
_EN_WORD = r"(?:(?:Mr|Mrs|Ms|Dr|Prof|St|Inc|Corp|Ltd|Co|Jr|Sr)\.|[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)?|[A-Z]{2,5}\b)"
_EN_SPAN = re.compile(rf"(?<![\w.]){_EN_WORD}(?:[ \t]+{_EN_WORD})*")
_EN_JOINERS = (" of ", " of the ", " for ")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_SENTENCE_END = re.compile(r"(?:[.!?:;\n\"“”(]|^)\s*$")


def extract_entities(text: str) -> dict[str, list[str]]:
    """``{"person": [...], "organization": [...], "location": [...], "misc": [...]}`` for ``text``."""
    found: dict[str, list[str]] = {kind: [] for kind in ENTITY_KINDS}
    if _HANGUL.search(text):
        for kind, name in _korean_entities(text):
            _add(found, kind, name)
    for kind, name in _english_entities(text):
        _add(found, kind, name)
    return found


def _add(found: dict[str, list[str]], kind: str, name: str) -> None:
    bucket = found[kind]
    if name not in bucket and len(bucket) < MAX_PER_KIND:
        bucket.append(name)


# ---- Korean ----
_kiwi: Any = None
_kiwi_lock = threading.Lock()


def _get_kiwi() -> Any:
    """One Kiwi per process (about 1 s and ~100 MB to load), single-threaded: callers parallelise, not Kiwi."""
    global _kiwi
    with _kiwi_lock:
        if _kiwi is None:
            from kiwipiepy import Kiwi

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # num_workers=0 means "single thread" since 0.21
                _kiwi = Kiwi(num_workers=0)
        return _kiwi


def _korean_entities(text: str) -> list[tuple[str, str]]:
    tokens = _get_kiwi().tokenize(text)
    out: list[tuple[str, str]] = []
    for i, tok in enumerate(tokens):
        if tok.tag != "NNP" or (i and tokens[i - 1].tag == "NNP" and tokens[i - 1].end == tok.start):
            continue
        name, last = _join_glued_nnps(tokens, i)
        following = tokens[last + 1].form if last + 1 < len(tokens) else ""
        preceding = text[max(0, tok.start - 5):tok.start]
        out.append((_classify_korean(name, following, preceding), name))
    return out


def _join_glued_nnps(tokens: Any, i: int) -> tuple[str, int]:
    """Proper nouns written without a space between them are one name (서울특별시 → 서울 + 특별시)."""
    name, j = tokens[i].form, i
    while j + 1 < len(tokens) and tokens[j + 1].tag in ("NNP", "NNG") and tokens[j + 1].start == tokens[j].end \
            and tokens[j + 1].form in _KO_PLACE_SUFFIXES + _KO_ORG_SUFFIXES:
        j += 1
        name += tokens[j].form
    return name, j


def _classify_korean(name: str, following: str, preceding: str) -> str:
    if name in _KO_ORGS or name.endswith(_KO_ORG_SUFFIXES) or preceding.rstrip().endswith(_KO_ORG_PREFIXES):
        return "organization"
    if name in _KO_PLACES or name.endswith(_KO_PLACE_SUFFIXES_LONG) or (
        len(name) in (2, 3) and name.endswith(_KO_PLACE_SUFFIXES)  # 청주시, 강남구; not 아보카도
    ):
        return "location"
    if following in _KO_PERSON_TITLES:
        return "person"
    if len(name) == 3 and name[0] in _KO_SURNAMES and _HANGUL.fullmatch(name[1]) and _HANGUL.fullmatch(name[2]):
        return "person"
    return "misc"


# ---- English ----
def _english_spans(text: str) -> list[tuple[int, int]]:
    """Runs of capitalised words; "X of Y" joined only when X ends in a head like University/Bank/Republic."""
    spans: list[tuple[int, int]] = []
    for m in _EN_SPAN.finditer(text):
        if spans:
            prev_start, prev_end = spans[-1]
            gap = text[prev_end:m.start()]
            head = text[prev_start:prev_end].split()[-1].lower()
            if gap in _EN_JOINERS and head in _EN_OF_HEADS:
                spans[-1] = (prev_start, m.end())
                continue
        spans.append((m.start(), m.end()))
    return spans


def _english_entities(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for start, end in _english_spans(text):
        words = text[start:end].removesuffix("'s").split()
        sentence_initial = bool(_SENTENCE_END.search(text[max(0, start - 40):start]))
        while words and words[0].lower() in _EN_SENTENCE_STARTERS:  # "The Bank of Korea" → "Bank of Korea"
            words.pop(0)
            sentence_initial = False
        titled = False
        while len(words) > 1 and words[0].lower() in _EN_PERSON_TITLES:  # "Prince Vasili Kuragin" → person
            words.pop(0)
            titled = True
        if not words or (len(words) == 1 and words[0].lower() in _EN_PERSON_TITLES | _EN_NOT_NAMES):
            continue
        kind = "person" if titled else _classify_english(words, text[max(0, start - 40):start])
        if kind == "misc" and (sentence_initial or (len(words) == 1 and words[0].isupper())):
            continue  # a lone capitalised first word or an acronym without any cue is too often not a name
        out.append((kind, " ".join(words)))
    return out


def _classify_english(words: list[str], before: str) -> str:
    lowered = [w.lower() for w in words]
    name = " ".join(lowered)
    prev_words = before.split()
    prev_word = prev_words[-1].lower() if prev_words else ""
    if lowered[-1] in _EN_ORG_SUFFIXES or (len(words) > 2 and lowered[0] in _EN_ORG_SUFFIXES and lowered[1] == "of"):
        return "organization"
    if name in _EN_PLACES or lowered[-1] in _EN_PLACE_SUFFIXES or lowered[0] in _EN_OF_HEADS - _EN_ORG_SUFFIXES:
        return "location"
    if prev_word in _EN_PERSON_TITLES or (lowered[0] in _EN_GIVEN_NAMES and len(words) >= 2):
        return "person"
    return "misc"
