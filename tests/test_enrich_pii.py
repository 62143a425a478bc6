"""PII detectors: exact findings on Korean and English fixtures, near-misses that must stay clean, masking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag_ray.enrich.pii import card_brand, find_pii, luhn_valid, mask_pii, pii_counts, rrn_checksum_valid


def _found(text: str) -> list[tuple[str, str]]:
    return [(f.type, f.value) for f in find_pii(text)]


KOREAN_FIXTURE = (
    "담당자: 김민수 (minsu.kim@example.co.kr)\n"
    "휴대폰 010-1234-5678, 사무실 02-123-4567, 팩스 (031) 987-6543\n"
    "해외에서는 +82 10 9876 5432 로 연락 바랍니다.\n"
    "주민등록번호: 900101-1234567\n"
    "급여 계좌: 신한 110-123-456789, 국민 123456-12-123456\n"
    "법인카드 4111-1111-1111-1111 (유효기간 12/27)\n"
    "접속 IP 203.0.113.7, 여권번호 M12345678\n"
)
ENGLISH_FIXTURE = (
    "Contact Jane Doe at jane.doe+hr@corp.example.com or call (415) 555-2671 / +1 212 555 0199.\n"
    "Card on file: 5500 0000 0000 0004, Amex 3782 822463 10005.\n"
    "Server 2001:db8::8a2e:370:7334 logged the request from 198.51.100.23.\n"
)


def test_korean_fixture_exact() -> None:
    assert _found(KOREAN_FIXTURE) == [
        ("email", "minsu.kim@example.co.kr"),
        ("phone", "010-1234-5678"),
        ("phone", "02-123-4567"),
        ("phone", "(031) 987-6543"),
        ("phone", "+82 10 9876 5432"),
        ("rrn", "900101-1234567"),
        ("account", "110-123-456789"),
        ("account", "123456-12-123456"),
        ("card", "4111-1111-1111-1111"),
        ("ip", "203.0.113.7"),
        ("passport", "M12345678"),
    ]
    assert pii_counts(find_pii(KOREAN_FIXTURE)) == {
        "account": 2, "card": 1, "email": 1, "ip": 1, "passport": 1, "phone": 4, "rrn": 1}


def test_english_fixture_exact() -> None:
    assert _found(ENGLISH_FIXTURE) == [
        ("email", "jane.doe+hr@corp.example.com"),
        ("phone", "(415) 555-2671"),
        ("phone", "+1 212 555 0199"),
        ("card", "5500 0000 0000 0004"),
        ("card", "3782 822463 10005"),
        ("ip", "2001:db8::8a2e:370:7334"),
        ("ip", "198.51.100.23"),
    ]


def test_spans_point_at_values() -> None:
    for f in find_pii(KOREAN_FIXTURE + ENGLISH_FIXTURE):
        assert (KOREAN_FIXTURE + ENGLISH_FIXTURE)[f.start:f.end] == f.value


def test_masking() -> None:
    text = "메일 a.b@example.com, 전화 010-1234-5678, 주민번호 900101-1234567, 카드 4111111111111111, " \
           "계좌 110-123-456789, IP 10.0.0.1"
    assert mask_pii(text) == "메일 [EMAIL], 전화 [PHONE], 주민번호 [RRN], 카드 [CARD], 계좌 [ACCOUNT], IP [IP]"
    assert mask_pii(text, types=["email"]) == text.replace("a.b@example.com", "[EMAIL]")
    assert mask_pii("nothing here") == "nothing here"


@pytest.mark.parametrize(("text", "expected"), [
    ("010-1234-5678", "010-1234-5678"), ("01012345678", "01012345678"), ("010.1234.5678", "010.1234.5678"),
    ("011-234-5678", "011-234-5678"), ("02-123-4567", "02-123-4567"), ("02 1234 5678", "02 1234 5678"),
    ("051-987-6543", "051-987-6543"), ("070-1234-5678", "070-1234-5678"), ("+82-2-123-4567", "+82-2-123-4567"),
    ("+82 (0)10-1234-5678", "+82 (0)10-1234-5678"), ("+44 20 7946 0958", "+44 20 7946 0958"),
    ("+14155552671", "+14155552671"), ("555-234-5678", "555-234-5678"),
])
def test_phone_formats(text: str, expected: str) -> None:
    assert _found(f"tel {text}.") == [("phone", expected)]


@pytest.mark.parametrize("text", [
    "010-12345-5678",  # wrong group size
    "0101234567890",  # too many digits
    "+1 23",  # too short for E.164
    "123-456-7890",  # NANP area code cannot start with 1
    "ref 02-1234",
])
def test_phone_near_misses(text: str) -> None:
    assert not [f for f in find_pii(text) if f.type == "phone"]


@pytest.mark.parametrize(("text", "expected"), [
    ("900101-1234567", "900101-1234567"),  # hyphen: date + gender digit, no checksum (post-2020 numbers)
    ("050315-4123456", "050315-4123456"),  # 2000s, female
    ("850707-5555555", "850707-5555555"),  # foreign resident (gender digit 5)
    ("900101 1234567", "900101 1234567"),
    ("9001011234568", "9001011234568"),  # bare 13 digits: checksum valid
])
def test_rrn_detected(text: str, expected: str) -> None:
    assert _found(f"번호 {text} 확인") == [("rrn", expected)]


@pytest.mark.parametrize("text", [
    "901301-1234567",  # month 13
    "900230-1234567",  # 30 February
    "900101-9234567",  # gender digit 9 (1800s) not accepted
    "900101-0234567",
    "9001011234567",  # bare 13 digits with a wrong checksum
    "991231-3123456",  # gender 3 → born 2099: in the future
    "1900101-1234567",  # glued to a longer number
])
def test_rrn_near_misses(text: str) -> None:
    assert not [f for f in find_pii(f"번호 {text} 확인") if f.type == "rrn"]


def test_rrn_checksum() -> None:
    assert rrn_checksum_valid("9001011234568")
    assert not rrn_checksum_valid("9001011234567")


@pytest.mark.parametrize(("number", "brand"), [
    ("4111111111111111", "visa"), ("5500000000000004", "mastercard"), ("2223003122003222", "mastercard"),
    ("378282246310005", "amex"), ("6011111111111117", "discover"), ("3530111333300000", "jcb"),
    ("30569309025904", "diners"), ("6200000000000005", "unionpay"),
])
def test_cards(number: str, brand: str) -> None:
    assert card_brand(number) == brand and luhn_valid(number)
    assert _found(f"card {number} ok") == [("card", number)]
    grouped = " ".join(number[i:i + 4] for i in range(0, len(number), 4))
    if len(number) == 16:
        assert _found(f"card {grouped} ok") == [("card", grouped)]


@pytest.mark.parametrize("text", [
    "4111-1111-1111-1112",  # Luhn fails
    "4111 1111 1111 1112",
    "1234567812345670",  # Luhn passes but no card brand starts with 1
    "4111-1111 1111-1111",  # mixed separators
    "order 41111111111111110000",  # too long
    "ISBN 978-89-1234-567-8",
    "ISBN 978-0-306-40615-7",
    "ISBN 9780306406157",
])
def test_card_near_misses(text: str) -> None:
    assert not [f for f in find_pii(text) if f.type == "card"]


@pytest.mark.parametrize("text", [
    "신한 110-123-456789", "우리 1002-123-456789", "하나 123-456789-12345", "농협 302-1234-5678-91",
    "기업 123-456789-01-234", "카카오뱅크 3333-01-1234567", "국민 123456-12-123456",
])
def test_accounts(text: str) -> None:
    assert [f.type for f in find_pii(text)] == ["account"]


@pytest.mark.parametrize("text", [
    "2024-01-15", "2024.01.15", "15.01.2024", "12:30:45", "version 1.2.3.4", "v10.0.0.1", "release 1.2.3.4.5",
    "버전 2.0.0.1", "EC 1.14.16.2", "01.02.03.04", "256.1.1.1", "std::vector<int>", "a::b", "ab:cd:ef",
    "p = 0.001 (95% CI 1.2-3.4)", "n = 17", "ISBN 978-89-1234-567-8", "serial 1234567890123",
    "M12345678 without context", "user@localhost", "price 1,234,567 won",
])
def test_near_misses_are_clean(text: str) -> None:
    assert find_pii(text) == [], _found(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("server 192.168.0.1.", "192.168.0.1"),  # sentence-final period
    ("DNS 1.1.1.1", "1.1.1.1"),  # a dotted quad without version context IS an address
    ("addr fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a"),
    ("addr 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
])
def test_ip(text: str, expected: str) -> None:
    assert _found(text) == [("ip", expected)]


def test_passport_needs_context() -> None:
    assert _found("여권번호: M123A4567") == [("passport", "M123A4567")]
    assert _found("Passport no. S12345678") == [("passport", "S12345678")]


def test_overlap_priority() -> None:
    # 13 bare digits that are both a valid RRN and Luhn-valid? the RRN detector runs first and claims the span
    findings = find_pii("9001011234568")
    assert [f.type for f in findings] == ["rrn"]


def test_real_corpora_have_no_false_positives(shared_data: Path) -> None:
    """The sample documents carry no PII except an author email in the Babel handbook's package.json example."""
    found: dict[str, list[str]] = {}
    for path in sorted((shared_data / "documents").glob("*")):
        if path.suffix in (".md", ".txt"):
            for f in find_pii(path.read_text(encoding="utf-8")):
                found.setdefault(path.name, []).append(f"{f.type}:{f.value}")
    assert found == {"en_babel_user_handbook.md": ["email:me@thejameskyle.com"],
                     "ko_babel_user_handbook.md": ["email:me@thejameskyle.com"]}


def test_scifact_contact_lines(shared_data: Path) -> None:
    """SciFact abstracts: the only findings are real contact details (emails, Tel./fax numbers)."""
    types: set[str] = set()
    with (shared_data / "scifact" / "corpus.jsonl").open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= 2000:
                break
            doc = json.loads(line)
            types |= {f.type for f in find_pii(doc["title"] + "\n" + doc["text"])}
    assert types <= {"email", "phone"}
