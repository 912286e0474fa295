#!/usr/bin/python3
"""An SMTP sink for the tests, on Debian's python3-aiosmtpd: accepts on 127.0.0.1:PORT,
answers RCPT TO per recipient from RULES, and appends one JSON line per message it
accepts to LOG. Prints "ready" once it listens; runs until SIGTERM.

    sink.py PORT LOG [RULES_JSON [USER PASSWORD]]

RULES_JSON maps a recipient to the replies its RCPT TO gets, in order; the last one
repeats ("250" accepts). Recipients without a rule are accepted. Its key "_delay" (not
an address) makes each message's DATA take that many seconds (a slow destination).
Each logged message has "active": the transactions (MAIL FROM to the end of DATA)
under way at its MAIL FROM, this one included, and "t": the time of its MAIL FROM. With USER and PASSWORD the sink offers AUTH
(PLAIN, LOGIN; also without TLS) and requires it before MAIL.
"""
import asyncio
import json
import signal
import socket
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

port, log = int(sys.argv[1]), sys.argv[2]  # port 0: one the kernel picks
rules = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
credentials = (sys.argv[4].encode(), sys.argv[5].encode()) if len(sys.argv) > 5 else None
delay = float(rules.pop('_delay', 0))
active = 0  # transactions under way


def end_transaction(session):
    global active
    if getattr(session, 'in_transaction', False):
        session.in_transaction = False
        active -= 1


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (auth_data.login, auth_data.password) == credentials
    return AuthResult(success=ok, handled=False)


class Handler:
    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        global active
        end_transaction(session)
        session.in_transaction = True
        active += 1
        envelope.active, envelope.started = active, time.time()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return '250 OK'

    async def handle_RSET(self, server, session, envelope):
        end_transaction(session)
        return '250 OK'

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        replies = rules.get(address)
        if replies:
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
            if not reply.startswith('250'):
                return reply
        envelope.rcpt_tos.append(address)
        return '250 2.1.5 OK'

    async def handle_DATA(self, server, session, envelope):
        if delay:
            await asyncio.sleep(delay)
        end_transaction(session)
        data = envelope.original_content or envelope.content
        headers = data.split(b'\r\n\r\n', 1)[0].decode('utf-8', 'replace')
        seq, received = '', None
        for line in headers.replace('\r\n ', ' ').replace('\r\n\t', ' ').split('\r\n'):
            if line.lower().startswith('x-test-seq:'):
                seq = line.split(':', 1)[1].strip()
            if received is None and line.lower().startswith('received:'):
                received = line.split(':', 1)[1].strip()
        with open(log, 'a') as f:
            f.write(json.dumps({'from': envelope.mail_from, 'to': envelope.rcpt_tos,
                                'helo': session.host_name,
                                'size': len(data), 'seq': seq, 'received': received or '',
                                'report': b'multipart/report' in data,
                                'active': getattr(envelope, 'active', 0),
                                't': getattr(envelope, 'started', 0)}) + '\n')
        return '250 2.0.0 OK: accepted'


signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
auth = {'authenticator': authenticator, 'auth_required': True,
        'auth_require_tls': False} if credentials else {}


class CountingSMTP(SMTP):
    """Ends the transaction of a session whose client went away in the middle of it."""

    def connection_lost(self, exc):
        end_transaction(self.session)
        super().connection_lost(exc)


class BoundController(Controller):
    """Serves on a socket bound before it starts (to port 0: the kernel's choice), so
    that no other process can take the port between choosing and binding it."""

    def __init__(self, handler, sock, **kwargs):
        self._sock = sock
        super().__init__(handler, hostname='127.0.0.1', port=sock.getsockname()[1], **kwargs)

    def factory(self):
        return CountingSMTP(self.handler, **self.SMTP_kwargs)

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self._sock,
                                       ssl=self.ssl_context)


listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(('127.0.0.1', port))
controller = BoundController(Handler(), listener, **auth)
controller.start()
print(f'ready {listener.getsockname()[1]}', flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
controller.stop()
