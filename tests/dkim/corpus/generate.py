#!/usr/bin/env python3
"""Generate the DKIM test corpus: the NN-*.eml files beside this script.

Each file is one RFC 5322 message exactly as an SMTP client sends it in DATA,
before dot-stuffing: CRLF line endings only (no bare CR or LF), every line at
most 998 octets before its CRLF, no NUL, no line that is exactly ".", and the
file ends with CRLF. The messages are deliberately awkward (folding, case,
whitespace, 8-bit bytes, MIME, odd addresses...) to exercise a DKIM signer;
README.md beside this script says what each one is for.

The output is deterministic: fixed dates and ids, and every "random" payload
comes from random.Random(<fixed seed>). Running the script again rewrites the
same bytes, so the committed files and this script stay in step:

    python3 tests/dkim/corpus/generate.py          # (re)write the files
    python3 tests/dkim/corpus/generate.py --check  # exit 1 if any file differs

The multi-megabyte message is not part of the corpus: the Rust test that needs
it builds it itself (see README.md).
"""

import base64
import os
import random
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CRLF = b"\r\n"


def b(x):
    """str -> UTF-8 bytes; bytes pass through untouched."""
    return x.encode("utf-8") if isinstance(x, str) else x


def msg(*lines):
    """Join lines (str or bytes, no line endings) with CRLF, end with CRLF."""
    return CRLF.join(b(x) for x in lines) + CRLF


def date(n):
    return "Date: Mon, 3 Mar 2025 09:%02d:00 +0100" % n


def mid(n, domain="example.com"):
    return "Message-ID: <corpus-%02d.20250303@%s>" % (n, domain)


def std(n, frm="Alice Example <alice@example.com>", to="Bob <bob@example.org>",
        subject=None):
    """The usual header block (From, To, Subject, Date, Message-ID)."""
    return [
        "From: " + frm,
        "To: " + to,
        "Subject: " + (subject or "corpus message %02d" % n),
        date(n),
        mid(n),
    ]


def b64_lines(data, width=76):
    enc = base64.b64encode(data).decode("ascii")
    return [enc[i:i + width] for i in range(0, len(enc), width)]


def png_noise(seed, w=32, h=32):
    """A real (valid) PNG of random RGB noise; stored deflate so that the
    bytes do not depend on the zlib version."""
    rnd = random.Random(seed)
    raw = b"".join(b"\x00" + bytes(rnd.getrandbits(8) for _ in range(w * 3))
                   for _ in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b""))


def pdf_ish(seed, size=2500):
    rnd = random.Random(seed)
    return (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
            + bytes(rnd.getrandbits(8) for _ in range(size)) + b"\n%%EOF\n")


def words(seed, n):
    rnd = random.Random(seed)
    vocab = ("relay submission header body canonical signature domain selector "
             "message octet folding whitespace envelope recipient sender key "
             "hash tag value mailbox").split()
    return " ".join(rnd.choice(vocab) for _ in range(n))


def wrap(text, width=72):
    out, line = [], ""
    for w in text.split(" "):
        if line and len(line) + 1 + len(w) > width:
            out.append(line)
            line = w
        else:
            line = (line + " " + w) if line else w
    if line:
        out.append(line)
    return out


def qp_encode_line(line, width=76):
    """Quoted-printable encode one line of UTF-8 text with soft breaks."""
    enc = []
    data = line.encode("utf-8")
    for i, c in enumerate(data):
        ch = chr(c)
        if c == 0x3D or c > 126 or (c < 32 and c != 9):
            enc.append("=%02X" % c)
        elif c in (0x20, 0x09) and i == len(data) - 1:
            enc.append("=%02X" % c)  # trailing whitespace must be encoded
        else:
            enc.append(ch)
    out, cur = [], ""
    for tok in enc:
        if len(cur) + len(tok) > width - 1:  # leave room for the soft break "="
            out.append(cur + "=")
            cur = ""
        cur += tok
    out.append(cur)
    return out


MESSAGES = {}


def add(name):
    def deco(fn):
        MESSAGES[name] = fn
        return fn
    return deco


# --------------------------------------------------------------------------
@add("01-plain-ascii")
def _():
    return msg(*std(1, subject="Plain ASCII baseline"),
               "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=us-ascii",
               "Content-Transfer-Encoding: 7bit",
               "",
               "Hello Bob,",
               "",
               "This is the simplest message in the corpus: ASCII only, one",
               "From address at example.com, Date and Message-ID present.",
               "",
               "-- ",
               "Alice")


@add("02-no-date-no-message-id")
def _():
    return msg("From: Alice Example <alice@example.com>",
               "To: Bob <bob@example.org>",
               "Subject: No Date and no Message-ID (the server adds them)",
               "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=us-ascii",
               "",
               "The relay must add Date: and Message-ID: before it signs, and",
               "sign the headers it added, or at least not break the signature.")


@add("03-folded-subject")
def _():
    return msg("From: Alice Example <alice@example.com>",
               "To: Bob <bob@example.org>",
               "Subject: This subject is deliberately long so that it has to be folded",
               "\tover several lines, the first continuation starting with a tab,",
               "   the second with three spaces,",
               " \t the third with a space and a tab, and",
               "\t\tthe last one with two tabs",
               date(3), mid(3),
               "X-Folded-Tabs:\tvalue\tafter\ttab",
               "\tcontinued\twith\ttabs",
               "Content-Type: text/plain;",
               "  charset=us-ascii;",
               "\tformat=fixed",
               "",
               "Folded headers: relaxed canonicalization unfolds them and",
               "squeezes whitespace; simple canonicalization keeps every octet.")


@add("04-duplicate-headers")
def _():
    return msg("From: Alice Example <alice@example.com>",
               "To: Bob <bob@example.org>",
               "X-Dup: first",
               "Subject: Duplicate header fields",
               "To: Carol <carol@example.org>",
               "X-Dup: second",
               date(4),
               "X-Dup: third",
               mid(4),
               "X-Dup:    fourth, with leading spaces",
               "x-dup: fifth, lower-case name",
               "",
               "Two To: fields and five X-Dup: fields (one spelled x-dup).",
               "A signer that signs To must sign both instances, bottom-up.")


@add("05-mixed-case-names")
def _():
    return msg("fROM: Alice Example <alice@example.com>",
               "tO: Bob <bob@example.org>",
               "SUBJECT: Mixed-case header names",
               "dATE: Mon, 3 Mar 2025 09:05:00 +0100",
               "MESSAGE-id: <corpus-05.20250303@example.com>",
               "mime-VERSION: 1.0",
               "Content-TYPE: text/plain; charset=us-ascii",
               "CONTENT-transfer-ENCODING: 7bit",
               "",
               "Header names are case-insensitive: the signer must find fROM:",
               "and sign it, and h= may name it in any case.")


@add("06-header-whitespace")
def _():
    return msg("From: Alice Example <alice@example.com>   ",
               "To: Bob <bob@example.org>\t",
               "Subject: Trailing whitespace \t \t",
               date(6), mid(6),
               "X-Empty:",
               "X-Only-Space: ",
               "X-Only-Tabs:\t\t",
               "X-No-Space-After-Colon:value",
               "X-Inner-Runs: a    b\t\tc \t d",
               "X-Many-Spaces-After-Colon:          spaced",
               "",
               "Header values with trailing spaces and tabs, an empty value,",
               "a value of only whitespace, no space after the colon, and runs",
               "of whitespace inside a value.")


@add("07-utf8-body-german")
def _():
    return msg(*std(7, subject="UTF-8 body, German"),
               "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=utf-8",
               "Content-Transfer-Encoding: 8bit",
               "",
               "Grüße aus München!",
               "",
               "Die Straße ist naß, die Bäume blühen, und Öl ist teuer.",
               "Äpfel, Öfen, Übermut; äöüß ÄÖÜẞ; „Anführungszeichen“ – Gedankenstrich …",
               "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.")


@add("08-utf8-body-japanese")
def _():
    return msg(*std(8, subject="UTF-8 body, Japanese"),
               "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=utf-8",
               "Content-Transfer-Encoding: 8bit",
               "",
               "こんにちは、ボブさん。",
               "",
               "いろはにほへと　ちりぬるを　わかよたれそ　つねならむ",
               "うゐのおくやま　けふこえて　あさきゆめみし　ゑひもせす",
               "全角スペース（　）と半角スペース（ ）が混在しています。",
               "日本語の電子メールは、ＤＫＩＭ署名のテストに使います。")


@add("09-utf8-body-emoji")
def _():
    return msg(*std(9, subject="UTF-8 body, emoji"),
               "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=utf-8",
               "Content-Transfer-Encoding: 8bit",
               "",
               "Four-byte code points: 😀 🎉 📨 🔏 ✉️",
               "ZWJ sequences: 👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈",
               "Skin tones and flags: 👍🏽 🇩🇪 🇯🇵",
               "Combining marks: e\u0301 (e + U+0301) vs \u00e9 (precomposed)",
               "Right-to-left: \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
               "Zero-width space: a\u200bb, no-break space: a\u00a0b")


@add("10-utf8-headers")
def _():
    return msg("From: Jürgen Müller <juergen@example.com>",
               "To: 山田 太郎 <taro@example.org>",
               "Cc: Zoë Ça <zoe@example.org>",
               "Subject: Grüße, 日本語の件名 and an emoji 📨 in a raw UTF-8 subject",
               date(10), mid(10),
               "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=utf-8",
               "Content-Transfer-Encoding: 8bit",
               "",
               "Raw UTF-8 in header values (RFC 6532, needs SMTPUTF8).",
               "Tschüss!")


@add("11-encoded-word-subjects")
def _():
    return msg("From: Alice Example <alice@example.com>",
               "To: Bob <bob@example.org>",
               "Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4=?= =?UTF-8?Q?und_viele_?=",
               " =?UTF-8?Q?Gr=C3=BC=C3=9Fe_=E2=80=93_encoded_words?=",
               "\t=?ISO-8859-1?Q?=E4=F6=FC?= plain tail",
               "X-Subject-Q: =?utf-8?q?=E6=97=A5=E6=9C=AC=E8=AA=9E?=",
               "X-Subject-B: =?utf-8?b?8J+TqCBtYWls?=",
               date(11), mid(11),
               "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=us-ascii",
               "",
               "RFC 2047 encoded words, B and Q, across folded lines.")


@add("12-latin1-8bit-body")
def _():
    return msg(*std(12, subject="ISO-8859-1 8-bit body (not UTF-8)"),
               "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=iso-8859-1",
               "Content-Transfer-Encoding: 8bit",
               "",
               "Gr\xfc\xdfe aus M\xfcnchen!".encode("latin-1"),
               "Caf\xe9, na\xefve, \xa9 2025, 10 \xb0C, \xbd Liter.".encode("latin-1"),
               b"These octets are not valid UTF-8: never decode the message.")


@add("13-line-990")
def _():
    line = ("0123456789" * 99)  # 990 octets
    assert len(line) == 990
    return msg(*std(13, subject="A body line of 990 octets"),
               "",
               "The next line is 990 octets long:",
               line,
               "and this one is short.")


@add("14-line-998")
def _():
    ascii998 = ("abcdefghij" * 100)[:998]
    spaces998 = ("x" * 990) + " " * 5 + "\t \t"  # 998, ends in whitespace
    jp = "あ" * 332  # 996 octets of UTF-8, 332 characters
    jp998 = jp + "ok"
    assert len(ascii998) == 998 and len(spaces998) == 998
    assert len(jp998.encode("utf-8")) == 998
    return msg(*std(14, subject="Body lines of exactly 998 octets"),
               "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=utf-8",
               "Content-Transfer-Encoding: 8bit",
               "",
               "998 octets of ASCII:",
               ascii998,
               "998 octets ending in spaces and tabs:",
               spaces998,
               "998 octets but only 334 characters (UTF-8):",
               jp998,
               "end")


@add("15-body-whitespace")
def _():
    return msg(*std(15, subject="Whitespace inside and at the end of body lines"),
               "",
               "trailing spaces   ",
               "trailing tabs\t\t",
               "trailing mix \t \t ",
               "runs     of     spaces     inside",
               "runs\t\t\tof\t\ttabs\tinside",
               "mixed \t \t run",
               "   leading spaces",
               "\tleading tab",
               "  \t  ",
               "the line above is only whitespace; the one below is empty",
               "",
               "last line")


@add("16-leading-dots")
def _():
    return msg(*std(16, subject="Body lines that start with a dot"),
               "",
               ".hidden",
               "..double",
               "...triple",
               ". a dot and a space",
               ".\ta dot and a tab",
               "a line in between",
               "..",
               ". ",
               ".end")


@add("17-empty-body")
def _():
    return msg(*std(17, subject="Empty body"),
               "")


@add("18-body-only-blank-lines")
def _():
    return msg(*std(18, subject="Body of nothing but blank lines"),
               "", "", "", "", "")


@add("19-trailing-blank-lines")
def _():
    return msg(*std(19, subject="Trailing blank lines at the end of the body"),
               "",
               "Some text, then four empty lines:",
               "", "", "", "")


@add("20-trailing-whitespace-lines")
def _():
    return msg(*std(20, subject="Body ending in whitespace-only lines"),
               "",
               "Text, then lines that contain only spaces or tabs:",
               "   ",
               "\t",
               "",
               " \t ")


@add("21-no-trailing-blank-line")
def _():
    return msg(*std(21, subject="One body line, no trailing blank line"),
               "",
               "x")


@add("22-multipart-mixed-png")
def _():
    bnd = "=_corpus22_boundary_7f3a"
    return msg(*std(22, subject="multipart/mixed with a base64 PNG"),
               "MIME-Version: 1.0",
               'Content-Type: multipart/mixed; boundary="%s"' % bnd,
               "",
               "This is a multi-part message in MIME format.",
               "",
               "--" + bnd,
               "Content-Type: text/plain; charset=utf-8",
               "Content-Transfer-Encoding: 8bit",
               "",
               "Hi Bob, the picture is attached. Grüße, Alice",
               "",
               "--" + bnd,
               'Content-Type: image/png; name="noise.png"',
               "Content-Transfer-Encoding: base64",
               'Content-Disposition: attachment; filename="noise.png"',
               "",
               *b64_lines(png_noise(22)),
               "",
               "--" + bnd + "--",
               "")


@add("23-multipart-nested-pdf")
def _():
    outer, inner = "outer-23-boundary", "inner-23-boundary"
    return msg(*std(23, subject="Nested multipart: alternative inside mixed, with a PDF"),
               "MIME-Version: 1.0",
               "Content-Type: multipart/mixed;",
               ' boundary="%s"' % outer,
               "",
               "--" + outer,
               'Content-Type: multipart/alternative; boundary="%s"' % inner,
               "",
               "--" + inner,
               "Content-Type: text/plain; charset=us-ascii",
               "",
               "The report is attached.",
               "--" + inner,
               "Content-Type: text/html; charset=us-ascii",
               "",
               "<p>The report is <b>attached</b>.</p>",
               "--" + inner + "--",
               "",
               "--" + outer,
               'Content-Type: application/pdf; name="report.pdf"',
               "Content-Transfer-Encoding: base64",
               'Content-Disposition: attachment; filename="report.pdf"',
               "",
               *b64_lines(pdf_ish(23)),
               "--" + outer + "--")


@add("24-multipart-alternative")
def _():
    bnd = "alt-24"
    return msg(*std(24, subject="multipart/alternative: text and HTML"),
               "MIME-Version: 1.0",
               'Content-Type: multipart/alternative; boundary="%s"' % bnd,
               "",
               "--" + bnd,
               "Content-Type: text/plain; charset=utf-8",
               "Content-Transfer-Encoding: 8bit",
               "",
               "Hello Bob — this is the plain-text part.",
               "",
               "--" + bnd,
               "Content-Type: text/html; charset=utf-8",
               "Content-Transfer-Encoding: 8bit",
               "",
               "<!DOCTYPE html>",
               '<html><head><meta charset="utf-8"></head>',
               "<body>",
               "  <p>Hello Bob &mdash; this is the <em>HTML</em> part.</p>",
               '  <p style="color: #336">   indented, trailing spaces   </p>',
               "</body></html>",
               "",
               "--" + bnd + "--",
               "")


@add("25-quoted-printable")
def _():
    long_line = ("This line is long enough to need soft line breaks in quoted-printable; "
                 "it has an equals sign a=b, x = 3, and some UTF-8: Grüße, café, 日本. "
                 + words(25, 30))
    body = []
    for ln in [long_line,
               "Short line with trailing space ",
               "Trailing tab\t",
               "key=value; other=thing",
               "=== banner ===",
               "",
               "Last line."]:
        body.extend(qp_encode_line(ln))
    return msg(*std(25, subject="Quoted-printable body"),
               "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=utf-8",
               "Content-Transfer-Encoding: quoted-printable",
               "",
               *body)


@add("26-from-display-comments")
def _():
    return msg('From: "Doe, John" (work) <john@example.com> (comment)',
               "To: Bob <bob@example.org> (the boss)",
               "Subject: Display name with a comma, and comments",
               date(26), mid(26),
               "",
               "The From address must be found among quotes and comments:",
               "the domain is example.com.")


@add("27-from-encoded-word")
def _():
    return msg("From: =?UTF-8?B?SsO8cmdlbiBNw7xsbGVy?= <juergen@example.com>",
               "To: =?ISO-8859-1?Q?Bj=F6rn?= <bjorn@example.org>",
               "Subject: Encoded-word display names",
               date(27), mid(27),
               "",
               "From: has an RFC 2047 display name (Jürgen Müller).")


@add("28-group-syntax")
def _():
    return msg("From: Alice Example <alice@example.com>",
               "To: Friends: Bob <bob@example.org>, carol@example.org;",
               "Cc: undisclosed-recipients:;",
               "Subject: Group syntax in To: and an empty group in Cc:",
               date(28), mid(28),
               "",
               "Group syntax: a display name, a colon, a list, a semicolon.")


@add("29-reply-headers")
def _():
    refs = ["<thread-%02d.%s@mail.example.org>" % (i, "a1b2c3d4e5f6" * 2) for i in range(1, 9)]
    return msg("From: Alice Example <alice@example.com>",
               "To: Bob <bob@example.org>",
               "Cc: Carol <carol@example.org>, Dave <dave@example.net>,",
               " Eve <eve@example.org>",
               "Reply-To: Alice Replies <replies@example.com>",
               "Subject: Re: Re: the long thread",
               date(29), mid(29),
               "In-Reply-To: " + refs[-1],
               "References: " + refs[0],
               *[" " + r for r in refs[1:]],
               "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=us-ascii",
               "",
               "> > earlier text",
               "> quoted reply",
               "",
               "My answer.")


@add("30-list-unsubscribe")
def _():
    return msg("From: Example Newsletter <news@example.com>",
               "To: bob@example.org",
               "Subject: The March newsletter",
               date(30), mid(30),
               "MIME-Version: 1.0",
               "List-Id: Example News <news.example.com>",
               "List-Unsubscribe: <mailto:unsubscribe@example.com?subject=unsubscribe>,",
               " <https://example.com/unsubscribe/opaque-token-0123456789abcdef>",
               "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
               "Precedence: bulk",
               "Content-Type: text/plain; charset=us-ascii",
               "Content-Transfer-Encoding: 7bit",
               "",
               "RFC 8058 one-click unsubscribe needs List-Unsubscribe and",
               "List-Unsubscribe-Post to be covered by a DKIM signature.")


@add("31-foreign-dkim-signature")
def _():
    return msg("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org;",
               " s=foreign2025; t=1740990000; h=from:to:subject:date:message-id;",
               " bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;",
               " b=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSwganVzdCBtYWRlLXVwIGJ5dGVzIGZvciB0",
               "  aGUgY29ycHVzOyBpdCBtdXN0IGJlIGxlZnQgYWxvbmUgYnkgdGhlIHJlbGF5IQ==",
               "Received: from client.example.org (client.example.org [192.0.2.10])",
               "\tby mx.example.org with ESMTPS id 4AbCdEf; Mon, 3 Mar 2025 09:30:00 +0100",
               *std(31, subject="A foreign DKIM-Signature (d=example.org) to leave alone"),
               "",
               "This message already carries a DKIM-Signature from example.org",
               "with a made-up b= value. It cannot verify and must be kept",
               "byte-for-byte; the relay adds its own signature for example.com.")


@add("32-subdomain-from")
def _():
    return msg(*std(32, frm="Ops <ops@sub.example.com>",
                    subject="From a subdomain: sub.example.com"),
               "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=us-ascii",
               "",
               "From: is at sub.example.com; the key may be the parent",
               "domain's (d=example.com) or the subdomain's own.")


@add("33-subdomain-utf8-multipart")
def _():
    bnd = "sub-33"
    return msg("From: Überwachung <monitor@sub.example.com>",
               "To: Bob <bob@example.org>",
               "Subject: =?UTF-8?Q?Subdomain_=E2=80=93_UTF-8_and_multipart?=",
               date(33), mid(33, "sub.example.com"),
               "MIME-Version: 1.0",
               'Content-Type: multipart/mixed; boundary="%s"' % bnd,
               "",
               "--" + bnd,
               "Content-Type: text/plain; charset=utf-8",
               "Content-Transfer-Encoding: 8bit",
               "",
               "Alarm: Festplatte zu 97 % voll.",
               "--" + bnd,
               'Content-Type: text/csv; name="disk.csv"',
               "Content-Transfer-Encoding: base64",
               "",
               *b64_lines(("host,used\n" + "".join("srv%02d,%d\n" % (i, random.Random(33 + i).randint(1, 99))
                                                   for i in range(40))).encode("ascii")),
               "--" + bnd + "--")


@add("34-two-from-same-domain")
def _():
    return msg("From: Alice <a@example.com>, Bernd <b@example.com>",
               "Sender: Alice <a@example.com>",
               "To: Bob <bob@example.org>",
               "Subject: Two authors, both at example.com",
               date(34), mid(34),
               "",
               "RFC 5322 allows several From addresses when Sender: names one",
               "mailbox. Both are at example.com.")


@add("35-two-from-mixed-domains")
def _():
    return msg("From: a@example.com, c@example.net",
               "Sender: a@example.com",
               "To: Bob <bob@example.org>",
               "Subject: Two authors at different domains",
               date(35), mid(35),
               "",
               "One From address at example.com and one at example.net.")


@add("36-folded-after-colon")
def _():
    return msg("From:",
               " Alice Example <alice@example.com>",
               "To:Bob <bob@example.org>",
               "Subject:",
               "\tFolded right after the colon",
               date(36), mid(36),
               "X-Fold-Each-Word: one",
               " two",
               " three",
               "",
               "Header values that begin on a continuation line, and a header",
               "with no space after the colon.")


@add("37-long-unfolded-header")
def _():
    prefix = "X-Long-Header: "
    value = ("token%04d " * 200) % tuple(range(200))
    line = (prefix + value)[:998]
    assert len(line) == 998
    return msg(*std(37, subject="A header line of exactly 998 octets"),
               line,
               "",
               "X-Long-Header is one unfolded line of 998 octets; the signer",
               "must not refold it.")


@add("38-body-looks-like-headers")
def _():
    return msg(*std(38, subject="The body starts with header-like lines"),
               "",
               "X-Not-A-Header: this is body text",
               "DKIM-Signature: v=1; not a header either",
               "From the start of this line it looks like an mbox separator",
               ">From already escaped",
               "",
               "Header parsing must stop at the first empty line.")


@add("39-received-trace")
def _():
    return msg("Return-Path: <alice@example.com>",
               "Received: from [192.0.2.55] (helo=laptop)",
               "\tby submit.example.com with esmtpsa (TLS1.3) id 1tAbCd-000001-2x;",
               "\tMon, 03 Mar 2025 09:38:59 +0100",
               "Received: from localhost by laptop; Mon, 03 Mar 2025 09:38:58 +0100",
               *std(39, subject="Pre-existing Received: and Return-Path: fields"),
               "X-Mailer: corpus-generator 1.0",
               "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Thunderbird/128.0",
               "",
               "Trace fields added by earlier hops come first.")


@add("40-format-flowed")
def _():
    return msg(*std(40, subject="format=flowed with soft line breaks"),
               "MIME-Version: 1.0",
               "Content-Type: text/plain; charset=utf-8; format=flowed; delsp=no",
               "Content-Transfer-Encoding: 8bit",
               "",
               "This paragraph is flowed: each line but the last ends with a ",
               "space, which a reader joins back into one long line, and a ",
               "signer using simple body canonicalization must keep exactly.",
               "",
               "> quoted and flowed ",
               "> second quoted line",
               "",
               " From here on the line was space-stuffed.",
               "-- ",
               "Alice")


def main(argv):
    check = "--check" in argv[1:]
    differ = []
    for name, fn in MESSAGES.items():
        data = fn()
        path = os.path.join(HERE, name + ".eml")
        if check:
            try:
                with open(path, "rb") as f:
                    if f.read() != data:
                        differ.append(name)
            except FileNotFoundError:
                differ.append(name)
        else:
            with open(path, "wb") as f:
                f.write(data)
    if check:
        for n in differ:
            print("differs: %s.eml" % n)
        return 1 if differ else 0
    print("wrote %d messages to %s" % (len(MESSAGES), HERE))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
