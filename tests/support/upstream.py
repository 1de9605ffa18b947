#!/usr/bin/env python3
"""A stand-in for an upstream smarthost (Amazon SES, SendGrid...) for tests.

Built on aiosmtpd (`pip install aiosmtpd`). Like the real services it
*requires* STARTTLS and AUTH (PLAIN or LOGIN, one user) before it takes mail,
or serves TLS from the first byte with --implicit-tls (SMTPS, port 465 style).

Every accepted message is stored in OUT as two files, numbered from 1:
  <n>.eml   the exact octets received (dot-unstuffed, nothing else changed)
  <n>.json  {"mail_from", "rcpt_tos", "mail_options", "rcpt_options",
             "helo", "login", "tls", "connection"}
             ("connection": the client's port, the same for every message
             sent over one connection)
The 250 reply to DATA says "Ok: queued as <n>".

Failure injection, by the local part of a recipient:
  tempfail...  RCPT -> 451 4.3.0 try later
  permfail...  RCPT -> 550 5.1.1 no such user
  throttleN... RCPT -> 454 4.7.0 Throttling failure (as Amazon SES says it)
               the first N times this address is tried, then accepted
  datatemp...  DATA -> 452 4.3.1 insufficient system storage (nothing stored)
  dataperm...  DATA -> 554 5.6.0 message content rejected (nothing stored)

Start-up output on stdout, one item a line, PORT last (then flushed):
  CA <path>     PEM certificate to trust (pass it as ca_file)
  PORT <n>      the port it listens on (127.0.0.1)
Logs go to stderr. Stop it with any signal.

Example:
  python3 tests/support/upstream.py --out /tmp/up --user relay --password pw
"""

import argparse
import asyncio
import json
import logging
import os
import ssl
import subprocess
import sys
import tempfile
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def make_certificate(folder):
    """Creates a CA and a server certificate for localhost/127.0.0.1 signed by
    it (rustls refuses a CA certificate used as the server's own), with the
    openssl CLI. Returns (ca, cert, key) paths."""
    ca_key, ca = os.path.join(folder, "ca.key"), os.path.join(folder, "ca.pem")
    key, csr = os.path.join(folder, "key.pem"), os.path.join(folder, "server.csr")
    cert, ext = os.path.join(folder, "cert.pem"), os.path.join(folder, "server.ext")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)
    run("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=upstream.py test CA")
    run("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    with open(ext, "w") as f:
        f.write("subjectAltName = DNS:localhost, IP:127.0.0.1\n"
                "basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = serverAuth\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial",
        str(int.from_bytes(os.urandom(8), "big")), "-days", "2", "-extfile", ext, "-out", cert)
    return ca, cert, key


def local_part(address):
    return address.rsplit("@", 1)[0].lower()


class Handler:
    def __init__(self, out, tls_mode):
        self.out = out
        self.tls_mode = tls_mode
        self.count = 0
        # address -> how many times it was refused with 454 so far
        self.throttled = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = local_part(address)
        if local.startswith("throttle"):
            digits = "".join(c for c in local[len("throttle"):] if c.isdigit()) or "1"
            seen = self.throttled.get(address, 0)
            if seen < int(digits):
                self.throttled[address] = seen + 1
                return "454 4.7.0 Throttling failure: Maximum sending rate exceeded."
        if local.startswith("tempfail"):
            return "451 4.3.0 try later"
        if local.startswith("permfail"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        locals_ = [local_part(r) for r in envelope.rcpt_tos]
        if any(l.startswith("datatemp") for l in locals_):
            return "452 4.3.1 insufficient system storage"
        if any(l.startswith("dataperm") for l in locals_):
            return "554 5.6.0 message content rejected"
        self.count += 1
        n = self.count
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "mail_options": envelope.mail_options,
            "rcpt_options": envelope.rcpt_options,
            "helo": session.host_name,
            "login": getattr(session.auth_data, "login", b"").decode("utf-8", "replace"),
            "tls": self.tls_mode,
            "connection": session.peer[1],
        }
        # Written under a temporary name and renamed, so a reader never sees
        # half a file.
        for name, data in ((f"{n}.eml", envelope.original_content),
                           (f"{n}.json", json.dumps(meta, ensure_ascii=False, indent=1).encode())):
            tmp = os.path.join(self.out, "." + name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, os.path.join(self.out, name))
        logging.info("stored message %d from %r to %r", n, envelope.mail_from, envelope.rcpt_tos)
        return f"250 2.0.0 Ok: queued as {n}"


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    p.add_argument("--out", required=True, help="folder for received messages")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--cert", help="PEM certificate chain (default: generate one)")
    p.add_argument("--key", help="PEM private key for --cert")
    p.add_argument("--certdir", help="where to generate the certificate (default: a new temporary folder)")
    p.add_argument("--implicit-tls", action="store_true", help="TLS from the first byte instead of STARTTLS")
    p.add_argument("--idle-timeout", type=float, default=300,
                   help="close a connection after this many seconds without a command (default 300)")
    args = p.parse_args()

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="upstream.py %(levelname)s %(message)s")
    os.makedirs(args.out, exist_ok=True)
    if args.cert:
        ca, cert, key = args.cert, args.cert, args.key or args.cert
    else:
        certdir = args.certdir or tempfile.mkdtemp(prefix="upstream-py-")
        os.makedirs(certdir, exist_ok=True)
        ca, cert, key = make_certificate(certdir)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    user, password = args.user.encode(), args.password.encode()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == user and auth_data.password == password
        logging.info("AUTH %s as %r: %s", mechanism, getattr(auth_data, "login", None), "ok" if ok else "refused")
        # handled=False: aiosmtpd sends the reply, 535 5.7.8 on refusal.
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    implicit = args.implicit_tls
    handler = Handler(args.out, "implicit" if implicit else "starttls")
    loop = asyncio.get_running_loop()
    if implicit:
        # aiosmtpd only knows about TLS it started itself (STARTTLS): with TLS
        # on the listening socket it must be told not to demand it for AUTH.
        # Every byte of such a connection is encrypted anyway.
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")

    def factory():
        return SMTP(
            handler,
            hostname="upstream.test",
            ident="upstream.py",
            decode_data=False,
            enable_SMTPUTF8=True,
            tls_context=None if implicit else context,
            require_starttls=not implicit,
            auth_required=True,
            auth_require_tls=not implicit,
            authenticator=authenticator,
            loop=loop,
            timeout=args.idle_timeout,
        )

    server = await loop.create_server(factory, "127.0.0.1", args.port, ssl=context if implicit else None)
    port = server.sockets[0].getsockname()[1]
    print(f"CA {ca}")
    print(f"PORT {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
