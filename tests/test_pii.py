"""PII redaction: realistic positives become placeholders, counted per kind; look-alikes survive untouched."""

from __future__ import annotations

import pytest

from flm.pipelines.config import PiiConfig
from flm.pipelines.prepare.pii import Redactor, id_number_valid, no_host


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
    ("sshd[812]: Failed password for root from 203.0.113.45 port 22 ssh2", "ip",
     "sshd[812]: Failed password for root from <IP_ADDRESS> port 22 ssh2"),
    ('10.1.2.3 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200', "ip",  # an access log line
     '<IP_ADDRESS> - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200'),
    ("ssh admin@172.20.4.9 -p 2222", "ip", "ssh admin@<IP_ADDRESS> -p 2222"),
    ("[Network]\nAddress=192.168.0.15/24\n", "ip", "[Network]\nAddress=<IP_ADDRESS>/24\n"),
    ("git daemon --export-all /pub/192.168.1.200/software", "ip", "git daemon --export-all /pub/<IP_ADDRESS>/software"),
    ("nameserver 1.1.1.1", "ip", "nameserver <IP_ADDRESS>"),  # a dotted quad of small numbers is still an address
    ("Release notes: the mirror moved to 151.101.2.132.", "ip", "Release notes: the mirror moved to <IP_ADDRESS>."),
    ("服务器IP：47.96.12.8，端口8080", "ip", "服务器IP：<IP_ADDRESS>，端口8080"),
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
    'The agent strings look like "git/1.8.3.1" or (curl/7.29.0.1).',  # product tokens
    "Needs sqlite-3.8.3.1 or libfoo_1.2.3.4; pip install foo==1.8.3.1 bar~=2.0.0.1; npm i baz@^1.8.3.1",
    "Tagged 1.8.3.1-rc2, then 1.8.3.1+dfsg1 and 1.8.3.1~bpo10.",   # pre-release and build suffixes
    '__version__ = "1.8.3.1"\n[assembly: AssemblyFileVersion("1.8.3.1")]\n<version>1.8.3.1</version>',
    '{"name": "flm", "version": "1.8.3.1", "ver": 2}',
    "Version: 1.8.3.1\nrevision 1.17.2.7\nbuild 10.0.19041.1",
    "## [1.8.3.1] - 2020-01-05\n### 1.8.3.0\n1.8.2.9 (2019-12-30)\n- fixed a crash",  # changelog headings
    "Supported versions: 1.8.3.0, 1.8.3.1 and 1.8.3.2.",        # a list led by a version
    "软件版本：1.8.3.1，请参见第 6.7.3.1 节“从存档中删除包”。",
    "netmask 255.255.255.0\nnetmask 255.255.254.0 and 255.0.0.0; wildcard 0.0.0.255",  # netmasks name no host
    "listen=0.0.0.0:8080\n127.0.0.1 localhost\n127.0.1.1 debian",  # unspecified and loopback
    "mDNS uses 224.0.0.251; broadcast to 255.255.255.255",       # multicast, broadcast
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


def test_addresses_next_to_versions_are_still_redacted() -> None:
    text = "Server version 2.4.1.3 runs at 10.0.0.5; traffic from 10.0.0.1 to 10.0.0.9 is dropped."
    out, counts = Redactor(PiiConfig()).redact(text)
    assert out == ("Server version 2.4.1.3 runs at <IP_ADDRESS>; traffic from <IP_ADDRESS> to <IP_ADDRESS> "
                   "is dropped.")
    assert counts == {"ip": 3}


def test_only_netmasks_and_hostless_blocks_are_kept_as_values() -> None:
    assert all(no_host(q) for q in ("255.255.255.252", "255.128.0.0", "0.0.0.0", "0.0.255.255", "127.8.9.1",
                                    "239.255.255.250", "255.255.255.255"))
    assert not any(no_host(q) for q in ("255.0.255.0", "254.255.255.0", "128.0.0.0", "192.168.0.1", "1.2.3.4",
                                        "240.0.0.1"))


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


def test_every_match_passes_its_rules_gate(sample_texts: dict[str, list[str]]) -> None:
    """A gate only skips texts its pattern cannot match: each positive, look-alike and sample text that a
    pattern matches passes that pattern's gate (so gating changes no redaction)."""
    texts = [text for text, _, _ in POSITIVES] + LOOK_ALIKES + [t for texts in sample_texts.values() for t in texts]
    matched = 0
    for kind, gate, pattern, _ in Redactor(PiiConfig()).rules:
        for text in texts:
            if pattern.search(text):
                matched += 1
                assert gate(text), (kind, pattern.pattern, text[:200])
    assert matched > len(POSITIVES)
