"""Shared bits of the loopback stand-in servers the tests start (Kubernetes API, KFP REST)."""

import json
from http.server import BaseHTTPRequestHandler


def send_json(handler: BaseHTTPRequestHandler, obj, code: int = 200) -> None:
    """Reply with ``obj`` as a JSON body and an exact Content-Length (clients read to that length)."""
    body = json.dumps(obj).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
