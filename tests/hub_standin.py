"""A stand-in for the Hugging Face Hub's HTTP API on 127.0.0.1, for the push and download tests.

It answers only what ``huggingface_hub`` (2.x) asks for ``create_repo`` + ``upload_folder`` of
small files and for ``snapshot_download``; the real ``HfApi`` client talks HTTP to it:

- ``POST /api/repos/create``: the repository (409 when it exists);
- ``POST /api/validate-yaml``: the card's front matter (no errors);
- ``POST /api/models/{repo}/preupload/{revision}``: every file ``regular`` (inline in the commit,
  no LFS or Xet storage);
- ``POST /api/models/{repo}/commit/{revision}``: the ndjson commit, base64 files kept as bytes;
- ``GET /api/models/{repo}[/revision/{revision}]``: the repository's commit and file list;
- ``GET|HEAD /{repo}/resolve/{revision}/{path}``: a file's bytes.

``deny=True`` answers 401 (an invalid or missing token) to everything. Every request is
recorded in :attr:`HubStandIn.requests`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse


class HubStandIn:
    """The server and what it received.

    Args:
        deny: answer 401 to every request.
    """

    def __init__(self, deny: bool = False) -> None:
        self.deny = deny
        self.repos: dict[str, dict[str, Any]] = {}  # repo -> {"private", "files", "sha"}
        self.requests: list[tuple[str, str]] = []
        self.tokens: list[str | None] = []
        self.commits: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The server's URL."""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _oid(data: bytes) -> str:
    """A file's git blob id, as the Hub gives it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _handler(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(
            self, status: int, body: bytes | dict, headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode() if isinstance(body, dict) else body
            self.send_response(status)
            content_type = (
                "application/json" if isinstance(body, dict) else "application/octet-stream"
            )
            if not (headers or {}).get("Content-Type"):
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _route(self) -> None:
            path = unquote(urlparse(self.path).path)
            hub.requests.append((self.command, path))
            hub.tokens.append(self.headers.get("Authorization"))
            body = self._body()
            if hub.deny:
                self._send(401, {"error": "Invalid credentials in Authorization header"})
                return
            if self.command == "POST" and path == "/api/repos/create":
                payload = json.loads(body)
                repo = f"{payload['organization']}/{payload['name']}"
                if repo in hub.repos:
                    self._send(409, {"error": "You already created this model repo"})
                    return
                private = payload.get("visibility") == "private"
                hub.repos[repo] = {"private": private, "files": {}, "sha": "0" * 40}
                self._send(200, {"url": f"{hub.endpoint}/{repo}", "name": repo})
                return
            if self.command == "POST" and path == "/api/validate-yaml":
                self._send(200, {"errors": [], "warnings": []})
                return
            if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/(.+)", path):
                files = json.loads(body)["files"]
                self._send(
                    200,
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                            for f in files
                        ]
                    },
                )
                return
            if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/(.+)", path):
                repo = match[1]
                if repo not in hub.repos:
                    self._send(404, {"error": "Repository not found"})
                    return
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                files = {}
                for line in lines:
                    if line["key"] == "file":
                        value = line["value"]
                        assert value["encoding"] == "base64"
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif line["key"] != "header":
                        self._send(400, {"error": f"the stand-in takes no {line['key']}"})
                        return
                hub.repos[repo]["files"].update(files)
                sha = hashlib.sha1(json.dumps(sorted(hub.repos[repo]["files"])).encode())
                hub.repos[repo]["sha"] = sha.hexdigest()
                hub.commits.append({"repo": repo, "header": lines[0]["value"], "files": files})
                oid = hub.repos[repo]["sha"]
                url = f"{hub.endpoint}/{repo}/commit/{oid}"
                self._send(200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})
                return
            if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path):
                repo = hub.repos.get(match[1])
                if repo is None:
                    self._send(404, {"error": "Repository not found"})
                    return
                entries = [
                    {"type": "file", "path": name, "size": len(data), "oid": _oid(data)}
                    for name, data in sorted(repo["files"].items())
                ]
                self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})
                return
            if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)(/revision/.+)?", path):
                repo = hub.repos.get(match[1])
                if repo is None:
                    self._send(404, {"error": "Repository not found"})
                    return
                siblings = [{"rfilename": name} for name in sorted(repo["files"])]
                self._send(
                    200,
                    {"id": match[1], "modelId": match[1], "sha": repo["sha"], "siblings": siblings},
                )
                return
            if match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                repo = hub.repos.get(match[1])
                data = None if repo is None else repo["files"].get(match[3])
                if data is None:
                    self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                    return
                headers = {"X-Repo-Commit": repo["sha"], "ETag": f'"{_oid(data)}"'}
                self._send(200, data, headers)
                return
            self._send(404, {"error": f"the stand-in does not serve {self.command} {path}"})

        do_GET = do_POST = do_HEAD = do_PUT = _route

    return Handler
