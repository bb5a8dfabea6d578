"""PII redaction: realistic positives become placeholders, counted per kind; look-alikes survive untouched."""

from __future__ import annotations

import pytest

from flm.pipelines.config import PiiConfig
from flm.pipelines.prepare.pii import Redactor, id_number_valid


def id_number(body: str) -> str:
    """`body` (17 digits) with its ISO 7064 MOD 11-2 check digit."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


VALID_ID = id_number("11010519491231002")  # 1949-12-31, Beijing Chaoyang
VALID_ID_X = next(i for i in (id_number(f"44030419900101{n:03d}") for n in range(1000)) if i.endswith("X"))

POSITIVES = [
    ("Write to jane.doe+news@mail.example.co.uk for details.", "email", "Write to <EMAIL> for details."),
    ("联系邮箱：zhang_san@163.com，欢迎来信。", "email", "联系邮箱：<EMAIL>，欢迎来信。"),
    ("The server listens on 192.168.10.254 port 22.", "ip", "The server listens on <IP_ADDRESS> port 22."),
    ("服务器地址192.168.1.1已更改", "ip", "服务器地址<IP_ADDRESS>已更改"),
    ("ping 8.8.8.8.", "ip", "ping <IP_ADDRESS>."),
    ("Add 2001:db8:85a3::8a2e:370:7334 to the allow list.", "ip", "Add <IP_ADDRESS> to the allow list."),
    ("full form fe80:0000:0000:0000:0202:b3ff:fe1e:8329 here", "ip", "full form <IP_ADDRESS> here"),
    ("Call +1 (555) 123-4567 after nine.", "phone", "Call <PHONE> after nine."),
    ("Office: +44 20 7946 0958", "phone", "Office: <PHONE>"),
    ("手机：13812345678，随时联系", "phone", "手机：<PHONE>，随时联系"),
    ("请拨打138 1234 5678或", "phone", "请拨打<PHONE>或"),
    ("电话+86 139-1234-5678。", "phone", "电话<PHONE>。"),
    ("座机010-62751234转分机", "phone", "座机<PHONE>转分机"),
    ("座机(0755) 26543210", "phone", "座机<PHONE>"),
    (f"身份证号：{VALID_ID}。", "id_number", "身份证号：<ID_NUMBER>。"),
    (f"证件{VALID_ID_X.lower()}有效", "id_number", "证件<ID_NUMBER>有效"),
]

LOOK_ALIKES = [
    "Upgrade to version 1.2.3.4 or v10.0.0.1 first.",         # versions, with their word
    "See Section 9.2.1.4, “Creating Encrypted Tunnels”.",     # section numbers
    "9.2.1.4. Creating Encrypted Tunnels with Port Forwarding",  # a numbered heading
    "The build 1.2.3.4.5 and 256.1.1.1 and 1.2.3 are not addresses.",
    "Released on 2024-01-15 at 12:30:45, tagged 2024.01.15.",
    "commit 3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 and sha256 e3b0c44298fc1c149afbf4c8996fb924",
    "std::vector<int> v; a::b::c(); x ::= y",
    "MAC 00:1A:2B:3C:4D:5E is a device, not an address here",
    "order 20240115123045678 and id 13812345678901 (too many digits)",
    "y = 0x13812345678 if build_13812345678 else v13812345678",  # glued to code: not a number on its own
    "int main() { return a@b; } and @decorator and user@localhost",
    "total +12 items, score 3+4=7, offsets +3 -4",
    "ISBN 978-7-111-12345-6 and ISSN 1234-5678",
    f"not an ID: {VALID_ID[:-1]}{'0' if VALID_ID[-1] != '0' else '1'} (wrong check digit)",
    "not an ID: 110105199913310021 (no 13th month)",
]


@pytest.mark.parametrize(("text", "kind", "expected"), POSITIVES)
def test_realistic_pii_is_replaced_and_counted(text: str, kind: str, expected: str) -> None:
    out, counts = Redactor(PiiConfig()).redact(text)
    assert out == expected
    assert counts == {kind: 1}


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_survive(text: str) -> None:
    out, counts = Redactor(PiiConfig()).redact(text)
    assert (out, counts) == (text, {})


def test_check_digit_and_birth_date_decide_an_id_number() -> None:
    assert id_number_valid(VALID_ID) and id_number_valid(VALID_ID_X)
    assert not id_number_valid(VALID_ID[:-1] + ("0" if VALID_ID[-1] != "0" else "1"))
    assert not id_number_valid(id_number("11010520990101002"))  # born in the future


def test_kinds_switch_off_and_placeholders_are_configurable() -> None:
    text = "mail a@example.org from 10.0.0.7 or call 13812345678"
    out, counts = Redactor(PiiConfig(ip_addresses=False, placeholders={
        "email": "[email]", "ip": "[ip]", "phone": "[phone]", "id_number": "[id]"})).redact(text)
    assert out == "mail [email] from 10.0.0.7 or call [phone]"
    assert counts == {"email": 1, "phone": 1}
