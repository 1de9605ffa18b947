#!/usr/bin/env python3
"""Writes the seed corpora, fuzz/corpus/<target>/, from the test suite.

The seeds are the inputs the tests already use: the string literals of the
SMTP dialogues (tests/*.rs), the smuggling sequences (tests/smuggling.rs),
the PROXY headers (tests/proxy.rs), the AUTH responses (tests/auth.rs), the
sendmail command lines and messages (tests/sendmail.rs), and the unit tests
of the parsers themselves, each framed the way its target reads its input
(see the comment at the top of each fuzz_targets/*.rs).

Run from anywhere: python3 fuzz/seed.py. It only adds files (named by their
content's hash), so a corpus the fuzzer has grown is kept.
"""

import base64
import hashlib
import pathlib
import re
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent

# A Rust string literal, byte or not; raw strings are rare in these files
# and not needed.
LITERAL = re.compile(rb'(b?)"((?:[^"\\]|\\.)*)"', re.S)
ESCAPE = re.compile(rb'\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|\n\s*|.)', re.S)


def unescape(body: bytes) -> bytes:
    def one(m):
        e = m.group(1)
        simple = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"0": b"\0", b"\\": b"\\", b'"': b'"', b"'": b"'"}
        if e in simple:
            return simple[e]
        if e.startswith(b"x"):
            return bytes([int(e[1:], 16)])
        if e.startswith(b"u{"):
            return chr(int(e[2:-1], 16)).encode()
        if e.startswith(b"\n"):
            return b""  # a line continuation
        return b"\\" + e

    return ESCAPE.sub(one, body)


def literals(*paths):
    out = []
    for p in paths:
        for path in sorted(ROOT.glob(p)):
            text = path.read_bytes()
            out += [unescape(m.group(2)) for m in LITERAL.finditer(text)]
    return out


def save(target, seeds):
    d = FUZZ / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    n = 0
    for s in dict.fromkeys(seeds):
        if 0 < len(s) <= 4096:
            (d / hashlib.sha1(s).hexdigest()).write_bytes(s)
            n += 1
    print(f"{target}: {n} seeds")


VERBS = {b"EHLO", b"HELO", b"STARTTLS", b"AUTH", b"MAIL", b"RCPT", b"DATA", b"BDAT", b"RSET", b"NOOP",
         b"QUIT", b"VRFY", b"EXPN", b"HELP"}


def command():
    seeds = []
    for lit in literals("tests/*.rs", "src/smtp/command.rs", "src/smtp/session/*.rs"):
        for line in re.split(rb"\r?\n", lit):
            if line.split(b" ", 1)[0].split(b":", 1)[0].upper() in VERBS:
                seeds.append(line)
    seeds += [
        b"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME SMTPUTF8",
        b"RCPT TO:<@relay.example:user@dest.example> NOTIFY=NEVER",
        b"RCPT TO:<\"odd >user\"@dest.example>",
        b"RCPT TO:<user@[IPv6:2001:db8::1]>",
        b"MAIL FROM:<>",
        b"BDAT 10 LAST",
        b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
        b"EHLO [192.0.2.1]",
    ]
    save("command", seeds)


SMUGGLING = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\n", b"\r\n.\n"]
SMUGGLED = (b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsend money\r\n")


def data():
    texts = [lit for lit in literals("tests/smuggling.rs", "src/smtp/data.rs") if b"\r" in lit or b"\n" in lit]
    for seq in SMUGGLING:
        texts.append(b"Subject: first\r\n\r\nhello" + seq + SMUGGLED + b"\r\n.\r\n")
    texts.append(b"Subject: first\r\n\r\nhello\r\n\x00.\r\n" + SMUGGLED + b"\r\n.\r\n")
    texts.append(b"Subject: x\r\n\r\n..hidden\r\n" + b"y" * 120 + b"\r\nbody\r\n.\r\nQUIT\r\n")
    seeds = []
    for t in texts:
        # Reject and normalize mode; lines of up to 78 or 128 octets; no
        # size limit, then a small one; the whole input, then cut in three.
        for settings in (150, 151, 255):
            seeds.append(bytes([settings, 255, 0]) + t)
        seeds.append(bytes([1, 8, 3, 5, 17, 2]) + t)
    save("data", seeds)


V2_SIGNATURE = b"\r\n\r\n\0\r\nQUIT\n"


def v2(ver_cmd, fam, payload):
    return V2_SIGNATURE + bytes([ver_cmd, fam]) + struct.pack(">H", len(payload)) + payload


def proxy():
    headers = [lit for lit in literals("tests/proxy.rs", "src/net/proxy.rs") if lit.startswith(b"PROXY")]
    headers += [
        b"PROXY TCP4 203.0.113.7 192.0.2.25 51234 587\r\nEHLO client.test\r\n",
        b"PROXY TCP6 2001:db8::7 2001:db8::1 80 587\r\n",
        b"PROXY UNKNOWN\r\n\x16\x03\x01",
        b"EHLO client.test\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    ]
    ipv4 = bytes([203, 0, 113, 7, 192, 0, 2, 25]) + struct.pack(">HH", 51234, 587)
    ipv6 = (bytes.fromhex("20010db8000000000000000000000007") + bytes.fromhex("20010db8000000000000000000000001")
            + struct.pack(">HH", 80, 587))
    headers += [
        v2(0x21, 0x11, ipv4 + bytes([0x04, 0, 2, 0, 0])) + b"\x16\x03\x01",
        v2(0x21, 0x11, ipv4 + bytes([0x01, 0, 4]) + b"smtp"),
        v2(0x21, 0x21, ipv6),
        v2(0x20, 0x00, b""),
        v2(0x20, 0x11, bytes([1] * 12)),
        v2(0x21, 0x00, b""),
        v2(0x21, 0x31, bytes(216)),
        v2(0x11, 0x11, bytes(12)),
        v2(0x21, 0x12, bytes(12)),
        v2(0x21, 0x11, bytes(8)),
        V2_SIGNATURE + bytes([0x21, 0x11, 0xFF, 0xFF]),
    ]
    seeds = []
    for h in headers:
        seeds.append(b"\0" + h)
        seeds.append(b"\x03\x05\x01\x0b" + h)
    save("proxy", seeds)


def auth():
    raws = []
    for path in ["tests/auth.rs", "tests/brute_force.rs", "src/smtp/session/auth.rs"]:
        text = (ROOT / path).read_bytes()
        raws += [unescape(m.group(1)) for m in re.finditer(rb'b64\(b?"((?:[^"\\]|\\.)*)"\)', text)]
    raws += [b"\0alice\0secret", b"alice\0alice\0pw with spaces", b"\0al\nice\0pw", b"\0\xff\0pw"]
    seeds = [b"\x00="]
    for r in raws:
        seeds.append(b"\x00" + base64.b64encode(r))
        seeds.append(b"\x02" + r)
        login, _, password = r.strip(b"\0").partition(b"\0")
        seeds.append(b"\x01" + base64.b64encode(login) + b"\n" + base64.b64encode(password))
    save("auth", seeds)


ARRAY = re.compile(rb'&\[\s*("(?:[^"\\]|\\.)*"(?:\s*,\s*"(?:[^"\\]|\\.)*")*)\s*,?\s*\]', re.S)


def sendmail_args():
    seeds = []
    for path in ["tests/sendmail.rs", "src/sendmail/args.rs"]:
        text = (ROOT / path).read_bytes()
        for m in ARRAY.finditer(text):
            args = [unescape(a.group(2)) for a in LITERAL.finditer(m.group(1))]
            seeds.append(b"\0".join(args))
    seeds += [b"-ti\0-fme@example.com\0you@example.org", b"--config=a.toml\0-oi\0--\0-t"]
    save("sendmail_args", seeds)


def sendmail_input():
    messages = [lit for lit in literals("tests/sendmail.rs", "src/sendmail/input.rs")
                if b"\n" in lit and (b": " in lit or lit.endswith(b"\n"))]
    messages += [
        b"From me Tue Jun  3 10:00:00 2025\nSubject: x\n\nFrom here\n",
        b"To: root\nFrom: root (Cron Daemon)\nBcc: e@z.example,\n f@z.example\n\n10%\r20%\r100%\n.\nafter\n",
        b"Subject: s\n\n" + b"x" * 1200 + b"\nend=\n",
    ]
    seeds = []
    for m in messages:
        seeds += [bytes([0b011]) + m, bytes([0b110 | (7 << 3)]) + m]
    save("sendmail_input", seeds)


if __name__ == "__main__":
    command()
    data()
    proxy()
    auth()
    sendmail_args()
    sendmail_input()
