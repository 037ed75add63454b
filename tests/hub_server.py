"""A local stand-in for the Hugging Face Hub HTTP API (stdlib only), enough for `snapshot_download`,
`hf_hub_download`, `from_pretrained` and `datasets.load_dataset` pointed at it with HF_ENDPOINT.

Endpoints (model repos at `/{org}/{name}`, dataset repos under `/datasets/`):

- GET  /api/{models,datasets}/{org}/{name}[/revision/{rev}]     repo info: sha, siblings
- GET  /api/{models,datasets}/{org}/{name}/tree/{rev}[/{path}]  tree listing (?recursive=true)
- POST /api/{models,datasets}/{org}/{name}/paths-info/{rev}     entries of the given paths
- HEAD|GET /[datasets/]{org}/{name}/resolve/{rev}/{path}        a file, with X-Repo-Commit, ETag,
                                                                Content-Length; Range requests served

Errors carry the `X-Error-Code` header huggingface_hub turns into its typed exceptions
(RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo). Every request is recorded, and
`cut_downloads = N` makes the next N file bodies stop half way with the connection dropped.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Repo:
    repo_id: str
    kind: str  # "model" | "dataset"
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> path -> content
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> sha
    gated: bool = False

    def resolve(self, rev: str) -> str | None:
        return rev if rev in self.commits else self.refs.get(rev)


def _read_dir(src: Path) -> dict[str, bytes]:
    return {p.relative_to(src).as_posix(): p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()}


def _oid(data: bytes) -> str:
    """The git blob id, as the Hub reports for a non-LFS file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    """Threaded server on 127.0.0.1 and a random port; `url` is what HF_ENDPOINT gets."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.bytes_sent = 0
        self.cut_downloads = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_repo(self, repo_id: str, src: Path | dict[str, bytes], kind: str = "model",
                 refs: tuple[str, ...] = ("main",), gated: bool = False) -> str:
        """Add a commit with the files of `src` (a dir or path -> bytes) and point `refs` at it; returns
        the fake commit sha (a new one for each call, so a branch can move)."""
        files = _read_dir(src) if isinstance(src, Path) else dict(src)
        repo = self.repos.setdefault((kind, repo_id), Repo(repo_id, kind, gated=gated))
        sha = hashlib.sha1(f"{kind}/{repo_id}/{len(repo.commits)}".encode()).hexdigest()
        repo.commits[sha] = files
        for ref in refs:
            repo.refs[ref] = sha
        return sha

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self.lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and contains in p)

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.bytes_sent = 0


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._route("HEAD")

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            with hub.lock:
                hub.requests.append((method, url.path))
            parts = url.path.strip("/").split("/")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
            if parts[0] == "api" and len(parts) >= 4 and parts[1] in ("models", "datasets"):
                kind = parts[1][:-1]
                repo = self._repo(kind, "/".join(parts[2:4]))
                if repo:
                    self._api(method, repo, parts[4:], parse_qs(url.query), body)
                return
            kind, rest = ("dataset", parts[1:]) if parts[0] == "datasets" else ("model", parts)
            if len(rest) >= 5 and rest[2] == "resolve":
                repo = self._repo(kind, "/".join(rest[:2]))
                if repo:
                    self._file(method, repo, unquote(rest[3]), unquote("/".join(rest[4:])))
                return
            self._error(404, "RepoNotFound", f"no route {url.path}")

        def _repo(self, kind: str, repo_id: str) -> Repo | None:
            repo = hub.repos.get((kind, repo_id))
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            elif repo.gated and not self.headers.get("Authorization"):
                self._error(401, "GatedRepo", f"Access to {repo_id} is restricted")
                return None
            return repo

        def _api(self, method: str, repo: Repo, rest: list[str], query: dict, body: bytes) -> None:
            rev = unquote(rest[1]) if len(rest) >= 2 else "main"
            sha = repo.resolve(rev)
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            files = repo.commits[sha]
            if not rest or rest[0] == "revision":
                info = {"id": repo.repo_id, "sha": sha, "private": False, "gated": repo.gated, "disabled": False,
                        "siblings": [{"rfilename": p, "size": len(b)} for p, b in files.items()],
                        "lastModified": "2024-01-01T00:00:00.000Z", "tags": [], "cardData": {}}
                return self._json(info)
            if rest[0] == "tree":
                prefix = unquote("/".join(rest[2:])).strip("/")
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                return self._json(_tree(files, prefix, recursive))
            if rest[0] == "paths-info":
                paths = _form_paths(body, self.headers.get("Content-Type", ""))
                entries = [e for p in paths for e in _tree(files, "", True, exact=p.strip("/"))]
                return self._json(entries)
            self._error(404, "EntryNotFound", f"no api route {rest[0]}")

        def _file(self, method: str, repo: Repo, rev: str, path: str) -> None:
            sha = repo.resolve(rev)
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            data = repo.commits[sha].get(path)
            if data is None:
                return self._error(404, "EntryNotFound", f"{path} does not exist at {rev}", sha)
            start = 0
            rng = self.headers.get("Range", "")
            if rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
                start = min(int(rng[6:].split("-")[0]), len(data))
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", sha)
            self.send_header("ETag", f'"{_oid(data)}"')
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if method == "HEAD":
                return
            chunk = data[start:]
            with hub.lock:
                cut = hub.cut_downloads > 0 and len(chunk) > 1
                if cut:
                    hub.cut_downloads -= 1
            if cut:  # half a body, then a dropped connection: a server dying mid-download
                self.wfile.write(chunk[: len(chunk) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.close()
                return
            self.wfile.write(chunk)
            with hub.lock:
                hub.bytes_sent += len(chunk)

        def _json(self, obj: object) -> None:
            raw = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)

        def _error(self, status: int, code: str, message: str, sha: str | None = None) -> None:
            raw = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if sha:
                self.send_header("X-Repo-Commit", sha)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)

    return Handler


def _tree(files: dict[str, bytes], prefix: str, recursive: bool, exact: str | None = None) -> list[dict]:
    """Tree entries (files and implied folders) under `prefix`, or the one entry at `exact`."""
    out: dict[str, dict] = {}
    for path, data in files.items():
        dirs = path.split("/")[:-1]
        for i in range(1, len(dirs) + 1):
            d = "/".join(dirs[:i])
            out.setdefault(d, {"type": "directory", "oid": _oid(d.encode()), "size": 0, "path": d})
        out[path] = {"type": "file", "oid": _oid(data), "size": len(data), "path": path}
    if exact is not None:
        return [out[exact]] if exact in out else []
    base = f"{prefix}/" if prefix else ""
    return [e for p, e in sorted(out.items()) if p.startswith(base)
            and (recursive or "/" not in p[len(base):])]


def _form_paths(body: bytes, content_type: str) -> list[str]:
    if "json" in content_type:
        paths = json.loads(body or b"{}").get("paths", [])
    else:
        paths = parse_qs(body.decode()).get("paths", [])
    return [paths] if isinstance(paths, str) else list(paths)
