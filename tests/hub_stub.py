"""A small local stand-in for the Hub's upload API on 127.0.0.1, for tests.

It answers the calls an upload makes — `POST /api/repos/create`, `POST …/preupload/{rev}` (every file
"regular", so no LFS / xet transfer) and `POST …/commit/{rev}` (ndjson with base64 file contents) — records
what was committed, and can fail the first N commits (HTTP 500 by default, which huggingface_hub retries by
itself; a status it does not retry, such as 507, reaches the caller).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


class HubStub:
    def __init__(self, fail_commits: int = 0, fail_status: int = 500):
        self.fail_commits = fail_commits
        self.fail_status = fail_status
        self.requests: list[tuple[str, str]] = []
        self.repos: dict[str, dict] = {}
        self.commits: list[dict] = []  # {"repo": id, "files": {path: bytes}, "summary": str}
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, code, payload):
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                with stub._lock:
                    stub.requests.append(("GET", self.path))
                self._reply(404, {"error": "not found"})

            def do_HEAD(self):
                with stub._lock:
                    stub.requests.append(("HEAD", self.path))
                self.send_response(404)
                self.end_headers()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with stub._lock:
                    stub.requests.append(("POST", self.path))
                    code, payload = stub.handle(self.path, body)
                self._reply(code, payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path, body):
        if path == "/api/validate-yaml":  # the README front matter must at least be valid YAML
            content = json.loads(body)["content"]
            try:
                yaml.safe_load(content.split("---")[1] if content.startswith("---") else "{}")
            except yaml.YAMLError as error:
                return 400, {"errors": [{"message": str(error)}]}
            return 200, {"warnings": []}
        if path == "/api/repos/create":
            request = json.loads(body or b"{}")
            kind = request.get("type") or "model"
            repo_id = (
                f"{request.get('organization') or 'user'}/{request['name']}"
                if "/" not in request["name"]
                else request["name"]
            )
            self.repos[repo_id] = {"type": kind, "private": bool(request.get("private"))}
            prefix = "" if kind == "model" else f"{kind}s/"
            return 200, {"url": f"{self.endpoint}/{prefix}{repo_id}", "name": repo_id}
        match = re.match(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/(preupload|commit)/([^/?]+)", path)
        if not match:
            return 404, {"error": f"no route for {path}"}
        kind, repo_id, action, _ = match.groups()
        if action == "preupload":
            files = json.loads(body)["files"]
            return 200, {
                "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            }
        if self.fail_commits > 0:
            self.fail_commits -= 1
            return self.fail_status, {"error": "the stub fails this commit on purpose"}
        files, summary = {}, ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "header":
                summary = item["value"].get("summary", "")
            elif item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        oid = hashlib.sha1(json.dumps(sorted(files)).encode() + str(len(self.commits)).encode()).hexdigest()
        self.commits.append({"repo": repo_id, "kind": kind, "files": files, "summary": summary, "oid": oid})
        prefix = "" if kind == "models" else f"{kind}/"
        return 200, {"commitUrl": f"{self.endpoint}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid}
