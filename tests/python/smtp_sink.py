#!/usr/bin/env python3
"""A real SMTP server for Vigil's email tests (aiosmtpd, Debian's python3-aiosmtpd).

It listens on 127.0.0.1 on a free port, prints `PORT <n>` on its first stdout line,
and stores every accepted message as DIR/msg-<n>.json: the envelope (mail_from,
rcpt_tos), whether the session was TLS, the login used, the decoded headers
(subject, from, to and any other), the text and HTML parts, and the raw message.

Options:
  --dir DIR                 where messages go (required)
  --tls-cert PEM --tls-key PEM
                            offer STARTTLS with this certificate
  --require-starttls        refuse mail before STARTTLS
  --auth USER:PASSWORD      require AUTH (PLAIN or LOGIN) with these credentials
  --auth-plaintext          allow AUTH without TLS (aiosmtpd refuses it by default)
  --reject-rcpt ADDR        answer 550 to RCPT TO:<ADDR>
  --tempfail N              answer 451 to the first N DATA commands
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Sink:
    def __init__(self, args):
        self.dir = args.dir
        self.reject = set(a.lower() for a in args.reject_rcpt)
        self.tempfail = args.tempfail
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.reject:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.tempfail > 0:
            self.tempfail -= 1
            return "451 4.3.0 try again later"
        self.count += 1
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        text = html = None
        for part in msg.walk():
            ctype = part.get_content_type()
            if ctype == "text/plain" and text is None:
                text = part.get_content()
            elif ctype == "text/html" and html is None:
                html = part.get_content()
        login = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None,
            "login": login,
            "helo": session.host_name,
            "headers": {k.lower(): str(v) for k, v in msg.items()},
            "content_type": msg.get_content_type(),
            "text": text,
            "html": html,
            "raw": raw.decode("utf-8", "replace"),
        }
        path = os.path.join(self.dir, "msg-%d.json" % self.count)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 accepted"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--require-starttls", action="store_true")
    p.add_argument("--auth")
    p.add_argument("--auth-plaintext", action="store_true")
    p.add_argument("--reject-rcpt", action="append", default=[])
    p.add_argument("--tempfail", type=int, default=0)
    args = p.parse_args()

    tls_context = None
    if args.tls_cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)

    authenticator = None
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == user
                and auth_data.password.decode() == password
            )
            # handled=False: aiosmtpd answers 535 itself on failure.
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

    sink = Sink(args)

    def factory():
        return SMTP(
            sink,
            hostname="sink.test",
            tls_context=tls_context,
            require_starttls=args.require_starttls,
            authenticator=authenticator,
            auth_required=bool(args.auth),
            auth_require_tls=not args.auth_plaintext,
        )

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    print("PORT %d" % port, flush=True)
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
