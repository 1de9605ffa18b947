#!/usr/bin/env python3
"""Verify every DKIM-Signature of stored messages with dkimpy, offline.

An independent DKIM verifier for the tests: mailferry signs, this checks.
Needs Python 3 with dkimpy and PyNaCl (`pip install dkimpy pynacl`; PyNaCl is
what dkimpy uses for ed25519-sha256). `.ci/run` installs both.

Usage:
  python3 tests/support/dkim_verify.py \\
      --record 'sel._domainkey.example.com=v=DKIM1; k=rsa; p=MIIB...' \\
      [--record NAME=VALUE ...] [--require D:S[,D:S...]] [--debug] FILE...

--record NAME=VALUE   one DNS TXT record: everything before the first "=" is
                      the owner name, the rest is the record's text as one
                      string. Repeatable. DNS queries are answered ONLY from
                      these (case-insensitive, trailing dot ignored); any
                      other name has no record. Nothing touches the network.
                      The same name given twice is a usage error.
--require D:S,...     after printing, exit 1 unless every FILE has, for each
                      listed d=/s= pair, at least one signature that verifies.
                      Repeatable; pairs compare case-insensitively.
--debug               copy dkimpy's debug log to standard error.

Each FILE is read as raw bytes (never decoded: 8-bit bodies and headers are
fine) as the upstream received it, and EVERY DKIM-Signature header in it is
verified on its own, topmost first (dkimpy's idx=0, 1, ...). One JSON line
per FILE on standard output:

  {"file": "1.eml", "error": null, "signatures": [
     {"d": "example.com", "s": "sel", "a": "rsa-sha256",
      "c": "relaxed/relaxed", "h": ["from", "to", ...],
      "ok": true, "error": null}, ...]}

d, s, a, c are the tag values as found (null if absent or unparsable; c is
"simple/simple" when the tag is absent, as RFC 6376 says); h is the list
of signed header names, lower-cased. ok is true only when dkimpy verified it.
error is null when ok, otherwise dkimpy's exception text ("ExceptionClass:
message") or what dkimpy logged (e.g. a missing key), or
"signature mismatch" when dkimpy just returned False. The file-level "error"
is set only if dkimpy could not parse the message at all (signatures is then
empty).

Exit status: 0 (whatever verified or not; the caller decides), 1 only for a
failed --require, 2 for a usage error (bad option, unreadable FILE).
"""

import argparse
import json
import logging
import sys

try:
    import dkim
    from dkim.util import parse_tag_value
except ImportError:  # pragma: no cover - environment problem, not a result
    sys.stderr.write("dkim_verify.py: dkimpy is not installed "
                     "(pip install dkimpy pynacl)\n")
    sys.exit(2)


class ListHandler(logging.Handler):
    """Collects log records of one verification."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def text(v):
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return str(v)


def make_dnsfunc(records):
    def dnsfunc(name, timeout=5):
        key = text(name).strip().rstrip(".").lower()
        value = records.get(key)
        return None if value is None else value.encode("utf-8")
    return dnsfunc


def sig_tags(raw_value):
    """(d, s, a, c, h) of one DKIM-Signature value; Nones if unparsable."""
    try:
        tags = parse_tag_value(raw_value)
    except Exception:
        return None, None, None, None, None
    h = tags.get(b"h")
    if h is not None:
        h = [text(x).strip().lower() for x in h.split(b":")]
    return (text(tags.get(b"d")), text(tags.get(b"s")), text(tags.get(b"a")),
            text(tags.get(b"c", b"simple/simple")), h)


def verify_file(path, data, dnsfunc, debug):
    result = {"file": path, "error": None, "signatures": []}
    try:
        headers = dkim.DKIM(data).headers
    except Exception as e:
        result["error"] = "%s: %s" % (type(e).__name__, e)
        return result
    sigs = [v for (n, v) in headers if n.lower() == b"dkim-signature"]
    for idx, raw in enumerate(sigs):
        d, s, a, c, h = sig_tags(raw)
        entry = {"d": d, "s": s, "a": a, "c": c, "h": h, "ok": False, "error": None}
        logger = logging.getLogger("dkim_verify.%d" % idx)
        logger.handlers[:] = []
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        handler = ListHandler()
        logger.addHandler(handler)
        if debug:
            err = logging.StreamHandler(sys.stderr)
            err.setFormatter(logging.Formatter(
                "%s sig %d: %%(levelname)s %%(message)s" % (path, idx)))
            logger.addHandler(err)
        try:
            # A fresh DKIM object per signature: verify() keeps state.
            ok = bool(dkim.DKIM(data, logger=logger).verify(idx=idx, dnsfunc=dnsfunc))
            entry["ok"] = ok
            if not ok:
                reasons = [r.getMessage() for r in handler.records
                           if r.levelno >= logging.WARNING]
                entry["error"] = "; ".join(reasons) if reasons else "signature mismatch"
        except Exception as e:  # dkim.DKIMException and anything unexpected
            entry["error"] = "%s: %s" % (type(e).__name__, e)
        result["signatures"].append(entry)
    return result


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="dkim_verify.py",
        description="Verify every DKIM-Signature of each FILE with dkimpy, "
                    "answering DNS only from --record.")
    p.add_argument("--record", action="append", default=[], metavar="NAME=VALUE",
                   help="a TXT record, e.g. 'sel._domainkey.example.com=v=DKIM1; k=rsa; p=...'")
    p.add_argument("--require", action="append", default=[], metavar="D:S[,D:S...]",
                   help="exit 1 unless each file has a verifying signature for each d:s")
    p.add_argument("--debug", action="store_true", help="dkimpy debug log to stderr")
    p.add_argument("files", nargs="+", metavar="FILE")
    args = p.parse_args(argv)

    records = {}
    for r in args.record:
        name, sep, value = r.partition("=")
        name = name.strip().rstrip(".").lower()
        if not sep or not name:
            p.error("--record wants NAME=VALUE, got %r" % r)
        if name in records:
            p.error("--record %s given twice" % name)
        records[name] = value

    required = []
    for group in args.require:
        for pair in group.split(","):
            d, sep, s = pair.strip().partition(":")
            if not sep or not d or not s:
                p.error("--require wants D:S pairs, got %r" % pair)
            required.append((d.strip().rstrip(".").lower(), s.strip().lower()))

    blobs = []
    for f in args.files:
        try:
            with open(f, "rb") as fh:
                blobs.append((f, fh.read()))
        except OSError as e:
            p.error("cannot read %s: %s" % (f, e))
    return records, required, args.debug, blobs


def main(argv):
    records, required, debug, blobs = parse_args(argv)
    dnsfunc = make_dnsfunc(records)
    missing = []
    for path, data in blobs:
        res = verify_file(path, data, dnsfunc, debug)
        sys.stdout.write(json.dumps(res) + "\n")
        good = {((x["d"] or "").rstrip(".").lower(), (x["s"] or "").lower())
                for x in res["signatures"] if x["ok"]}
        for pair in required:
            if pair not in good:
                missing.append((path, pair))
    sys.stdout.flush()
    for path, (d, s) in missing:
        sys.stderr.write("dkim_verify.py: %s: no verifying signature for d=%s s=%s\n"
                         % (path, d, s))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
