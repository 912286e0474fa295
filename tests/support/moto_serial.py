#!/usr/bin/env python3
"""moto_server with its requests serialised, except SQS long polls.

moto checks an S3 conditional write (If-Match / If-None-Match) and then stores the
object in a separate step. moto_server runs threaded, so two concurrent conditional PUTs
can both pass the check: an update is lost, which real S3 never allows (its conditional
writes are atomic). Serialising requests gives moto the atomicity S3 has. SQS
ReceiveMessage long polls stay concurrent, so a waiting client does not stall the rest.

usage: moto_serial.py -H HOST [-p PORT]
With no port (or 0) it binds a free one: no other process can take it between the
choice and the bind. Either way it prints "port N" on stdout once it listens.
"""
import argparse
import os
import threading

from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('-H', '--host', default='127.0.0.1')
    parser.add_argument('-p', '--port', type=int, default=0)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialised(environ, start_response):
        if environ.get('HTTP_X_AMZ_TARGET', '').endswith('.ReceiveMessage'):
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))

    server = make_server(args.host, args.port, serialised, threaded=True)
    os.environ.setdefault('MOTO_PORT', str(server.port))
    print(f'port {server.port}', flush=True)
    server.serve_forever()


if __name__ == '__main__':
    main()
