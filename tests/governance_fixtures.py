"""Synthetic Korean and English PII documents for the governance tests (every value is made up).

Expected labels (default rules): RRN / card → restricted; email / phone → confidential; an IP address → internal.
"""

from __future__ import annotations

from pathlib import Path

RRN = "900101-1234568"  # 1990-01-01, male; hyphenated, so no checksum is required
CARD = "4111-1111-1111-1111"  # Visa test number, valid Luhn
EMAIL = "jane.doe@example.com"
KO_EMAIL = "kim.minsu@example.co.kr"
PHONE = "010-1234-5678"
IP = "10.20.30.40"

RESTRICTED_CANARY = "canaryrestrictedx"
CONTACT_CANARY = "canarycontactx"
NOTICE_CANARY = "canarynoticex"

FIXTURES: dict[str, str] = {
    # Korean HR record: RRN and a mobile number → restricted, pii rrn + phone
    "ko_hr_record.txt": (f"인사팀 직원 명부 {RESTRICTED_CANARY}\n홍길동 주민등록번호 {RRN}, 휴대폰 {PHONE}. "
                         "입사일은 2019년 3월 2일이며 소속은 개발본부입니다.\n"),
    # English billing contact: email and a card number → restricted, pii card + email
    "en_billing.txt": (f"Billing contact for the Acme account {RESTRICTED_CANARY}: {EMAIL}. "
                       f"The card on file is {CARD} and renews every year in March.\n"),
    # Korean contact sheet: email and phone only → confidential
    "ko_contacts.txt": (f"고객지원 담당자 연락처 {CONTACT_CANARY}\n담당: 김민수, 이메일 {KO_EMAIL}, 전화 {PHONE}. "
                        "평일 오전 9시부터 오후 6시까지 응대합니다.\n"),
    # English notice with an IP address → internal (readable under the ACL, masked for non-admins)
    "en_notice.txt": (f"Maintenance notice {NOTICE_CANARY}: the gateway at {IP} restarts tonight at 23:00. "
                      "Expect a short interruption of the intranet portal.\n"),
}


def write_fixtures(target: Path, names: tuple[str, ...] | None = None) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name, text in FIXTURES.items():
        if names is None or name in names:
            (target / name).write_text(text, encoding="utf-8")
    return target
