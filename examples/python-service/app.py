#!/usr/bin/env python3
"""A service in Python that uses a rotated API token, behind `rekey agent`.

It knows nothing about rekey: it reads its token from a file at start and again on SIGHUP, which
is what the agent's reload command sends. Standard library only.

Environment:
  TOKEN_FILE    file holding the token (the agent writes it; default /run/secrets/upstream-token)
  UPSTREAM_URL  the upstream API it calls with the token on every request
  AUTH_SCHEME   "" sends `Authorization: <token>` (LaunchDarkly); "Bearer" sends `Bearer <token>`
  PORT          where it listens (default 8080); PID_FILE, if set, gets its process id

Routes:
  GET /         calls the upstream with the token; 200 when the upstream said 2xx, else 502
  GET /healthz  the same call: the agent confirms only once this passes with the new token
  GET /stats    requests served, upstream 401s seen, reloads done (never the token)
"""
import json
import os
import signal
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_FILE = os.environ.get("TOKEN_FILE", "/run/secrets/upstream-token")
UPSTREAM_URL = os.environ["UPSTREAM_URL"]
AUTH_SCHEME = os.environ.get("AUTH_SCHEME", "Bearer")
PORT = int(os.environ.get("PORT", "8080"))

lock = threading.Lock()
stats = {"requests": 0, "upstream_401": 0, "reloads": 0}
token = ""


def load_token():
    global token
    with open(TOKEN_FILE, encoding="utf-8") as f:
        value = f.read().strip()
    with lock:
        token = value


def on_hup(_signum, _frame):
    # The agent sent SIGHUP after it replaced the file: read it now, before answering anything else.
    load_token()
    with lock:
        stats["reloads"] += 1


def call_upstream():
    with lock:
        current = token
    auth = f"{AUTH_SCHEME} {current}" if AUTH_SCHEME else current
    req = urllib.request.Request(UPSTREAM_URL, headers={"Authorization": auth})
    try:
        with urllib.request.urlopen(req, timeout=5) as res:
            return res.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 599


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/stats":
            with lock:
                return self.answer(200, dict(stats))
        if self.path not in ("/", "/healthz"):
            return self.answer(404, {"error": "not found"})
        status = call_upstream()
        with lock:
            if self.path == "/":
                stats["requests"] += 1
            if status == 401:
                stats["upstream_401"] += 1
        ok = 200 <= status < 300
        return self.answer(200 if ok else (503 if self.path == "/healthz" else 502), {"upstream": status})

    def log_message(self, *_args):
        pass


if __name__ == "__main__":
    load_token()
    signal.signal(signal.SIGHUP, on_hup)
    if os.environ.get("PID_FILE"):
        with open(os.environ["PID_FILE"], "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))
    server = ThreadingHTTPServer(("127.0.0.1" if os.environ.get("LISTEN_LOCAL") else "0.0.0.0", PORT), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"listening on :{PORT}", flush=True)
    server.serve_forever()
