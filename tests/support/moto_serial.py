#!/usr/bin/env python3
"""moto_server with its requests serialised, except SQS long polls, and counted.

moto checks an S3 conditional write (If-Match / If-None-Match) and then stores the
object in a separate step. moto_server runs threaded, so two concurrent conditional PUTs
can both pass the check: an update is lost, which real S3 never allows (its conditional
writes are atomic). Serialising requests gives moto the atomicity S3 has. SQS
ReceiveMessage long polls stay concurrent, so a waiting client does not stall the rest.

Each request is counted by kind ("s3 GET", "s3 PUT", ..., "sqs ReceiveMessage", ...):
GET /__counts answers them as JSON (that request is not counted nor passed to moto), so
that a test can see what its storage asked of S3 and SQS, whatever process asked.

usage: moto_serial.py -H HOST [-p PORT]
With no port (or 0) it binds a free one: no other process can take it between the
choice and the bind. Either way it prints "port N" on stdout once it listens.
"""
import argparse
import collections
import json
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
    counts = collections.Counter()
    counts_lock = threading.Lock()

    def serialised(environ, start_response):
        target = environ.get('HTTP_X_AMZ_TARGET', '')
        if environ.get('PATH_INFO') == '/__counts' and not target:
            with counts_lock:
                body = json.dumps(counts).encode()
            start_response('200 OK', [('Content-Type', 'application/json')])
            return [body]
        kind = 'sqs ' + target.split('.')[-1] if target else 's3 ' + environ['REQUEST_METHOD']
        if kind == 's3 GET' and 'list-type=2' in environ.get('QUERY_STRING', ''):
            kind = 's3 LIST'
        with counts_lock:
            counts[kind] += 1
        if target.endswith('.ReceiveMessage'):
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))

    server = make_server(args.host, args.port, serialised, threaded=True)
    os.environ.setdefault('MOTO_PORT', str(server.port))
    print(f'port {server.port}', flush=True)
    server.serve_forever()


if __name__ == '__main__':
    main()
