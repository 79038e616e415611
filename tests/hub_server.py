"""A Hugging Face Hub on loopback for the tests: the endpoints huggingface_hub's `snapshot_download` calls, over
real HTTP, serving model and dataset repos from local folders (point HF_ENDPOINT at `Hub.url`).

- GET /api/{models,datasets}/{repo}/revision/{rev}: the repo's commit and files;
- GET /api/{models,datasets}/{repo}: the same at main (what `datasets` asks before streaming);
- GET /api/{models,datasets}/{repo}/tree/{rev}?recursive=true: the file list with sizes and ids;
- HEAD/GET /{repo}/resolve/{rev}/{path} and /datasets/{repo}/resolve/{rev}/{path}: a file, with the commit in
  X-Repo-Commit and its id in ETag, as the hub answers.

It also answers the ModelScope endpoints its client's `snapshot_download` uses (point MODELSCOPE_ENDPOINT at
`Hub.url`), from the same repos: GET /api/v1/models/{repo}/repo/files and /api/v1/datasets/{repo}/repo/tree (the
file list) and GET /api/v1/{models,datasets}/{repo}/repo?Revision=...&FilePath=... (a file).

Errors carry the hub's `X-Error-Code` header (RepoNotFound, RevisionNotFound, GatedRepo), which huggingface_hub
turns into its own exception types. A repo marked private answers 401 without `Authorization: Bearer <token>`.
Every request is recorded in `Hub.requests`.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class Repo:
    folder: Path
    private_token: str | None = None  # required bearer token, or None for a public repo

    @property
    def files(self) -> dict[str, Path]:
        return {p.relative_to(self.folder).as_posix(): p for p in sorted(self.folder.rglob("*")) if p.is_file()}

    @property
    def commit(self) -> str:
        digest = hashlib.sha1()
        for name, path in self.files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha1(path.read_bytes()).digest())
        return digest.hexdigest()


@dataclass
class Hub:
    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)  # (models|datasets, "owner/name") -> Repo
    requests: list[str] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def add(self, kind: str, repo_id: str, folder: Path, private_token: str | None = None) -> Repo:
        self.repos[(kind, repo_id)] = Repo(Path(folder), private_token)
        return self.repos[(kind, repo_id)]

    def start(self) -> Hub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub.answer(self, body=False)

            def do_GET(self):
                hub.answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------------------------------------- routing

    def answer(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(request.path).path)
        self.requests.append(f"{request.command} {path}")
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"] and parts[2] in ("models", "datasets") and len(parts) >= 6:
            return self.modelscope(request, parts[2], "/".join(parts[3:5]), parts[5], body)
        if parts[0] == "api" and len(parts) in (4, 5) or len(parts) >= 6 and parts[1] in ("models", "datasets"):
            parts += ["revision", "main"][len(parts) - 4:]  # /api/datasets/{repo}: the info at main
            kind, repo_id, action, rev = parts[1], "/".join(parts[2:4]), parts[4], parts[5]
            repo = self.find(request, kind, repo_id, rev)
            if repo is None:
                return
            if action == "revision":
                siblings = [{"rfilename": name} for name in repo.files]
                return self.send_json(request, {"id": repo_id, "sha": repo.commit, "siblings": siblings,
                                                "private": repo.private_token is not None}, body)
            if action == "tree":  # tree/{rev}[/{folder}]: the files under a folder (this hub's repos are flat)
                folder = "/".join(parts[6:])
                if folder:
                    return self.error(request, 404, "EntryNotFound", f"{folder} not in {repo_id}")
                tree = [{"type": "file", "path": name, "size": p.stat().st_size,
                         "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for name, p in repo.files.items()]
                return self.send_json(request, tree, body)
        kind = "datasets" if parts[0] == "datasets" else "models"
        parts = parts[1:] if kind == "datasets" else parts
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self.find(request, kind, "/".join(parts[:2]), parts[3])
            if repo is None:
                return
            name = "/".join(parts[4:])
            if name not in repo.files:
                return self.error(request, 404, "EntryNotFound", f"{name} not in {parts[:2]}")
            data = repo.files[name].read_bytes()
            request.send_response(200)
            request.send_header("Content-Length", str(len(data)))
            request.send_header("X-Repo-Commit", repo.commit)
            request.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            request.end_headers()
            if body:
                request.wfile.write(data)
            return
        self.error(request, 404, "EntryNotFound", f"no route for {path}")

    def modelscope(self, request, kind: str, repo_id: str, action: str, body: bool) -> None:
        """ModelScope's answers: {"Code": 200, "Data": {"Files": [...]}} for the list (models: repo/files;
        datasets: repo/tree, paged), the bytes for a file (repo?FilePath=...)."""
        repo = self.repos.get((kind, repo_id))
        if repo is None:
            error = json.dumps({"Code": 10010205001, "Message": f"{kind[:-1]} {repo_id} not found"}).encode()
            return self.send_bytes(request, 404, "application/json", error, body)
        if action == "repo" and "FilePath" in (query := parse_qs(urlparse(request.path).query)):
            data = repo.files[query["FilePath"][0]].read_bytes()
            return self.send_bytes(request, 200, "application/octet-stream", data, body)
        files = [{"Name": name, "Path": name, "Type": "blob", "Size": p.stat().st_size, "Revision": repo.commit,
                  "Sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for name, p in repo.files.items()]
        self.send_json(request, {"Code": 200, "Success": True, "Data": {"Files": files}}, body)

    def find(self, request, kind: str, repo_id: str, rev: str) -> Repo | None:
        repo = self.repos.get((kind, repo_id))
        if repo is None:
            self.error(request, 404, "RepoNotFound", f"Repository Not Found for url: {request.path}.")
            return None
        if repo.private_token and request.headers.get("Authorization") != f"Bearer {repo.private_token}":
            self.error(request, 401, "RepoNotFound", f"Repository Not Found for url: {request.path}. "
                                                     "Invalid credentials in Authorization header")
            return None
        if rev not in ("main", repo.commit):
            self.error(request, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo

    @staticmethod
    def send_bytes(request, status: int, content_type: str, data: bytes, body: bool) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if body:
            request.wfile.write(data)

    @classmethod
    def send_json(cls, request, obj, body: bool) -> None:
        cls.send_bytes(request, 200, "application/json", json.dumps(obj).encode(), body)

    @staticmethod
    def error(request, status: int, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("X-Error-Code", code)
        request.send_header("X-Error-Message", message)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)
