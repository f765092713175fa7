"""FakeHub: a real HTTP server that answers like the Hugging Face Hub, for the repos a test publishes.

The Hub is unreachable from test machines. ``snapshot_download`` (huggingface_hub 2.4) and
``HfApi.model_info`` need only these endpoints, implemented here as the client reads them:

    GET  /api/models/{repo}[/revision/{rev}][?blobs=True]  id, sha, siblings (size, blobId, lfs)
    GET  /api/models/{repo}/tree/{rev}?recursive=True       the files of a commit (path, size, oid, lfs)
    HEAD /{repo}/resolve/{rev}/{path}                       X-Repo-Commit, ETag (the git blob id) or
                                                            X-Linked-Etag (the LFS sha256),
                                                            X-Linked-Size, Content-Length
    GET  /{repo}/resolve/{rev}/{path}                       the bytes (``Range: bytes=N-`` honoured)

Failures carry the Hub's ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound,
GatedRepo), which huggingface_hub turns into its typed errors. A gated repo answers its model
info (as the Hub does) but refuses files: 401 without a token, 403 with another one.

Weights (``*.safetensors`` and other binary formats) are served as LFS files, the rest as plain
git files, so the cache gets both kinds of blob names. A test can make one file fail (HTTP 500)
or hold a file's body half-sent until it releases it, to catch a download in the middle.

Point the code under test at it with ``HF_ENDPOINT=hub.url`` (ocrd reads it at each pull).
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".gguf", ".msgpack", ".h5")
HOLD_TIMEOUT = 60.0  # hang guard: a held body is sent anyway after this long


def tiny_safetensors(values: int, fill: bytes = b"\0") -> bytes:
    """A valid safetensors file holding one float32 tensor: weights for small synthetic repos."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}}).encode()
    return len(header).to_bytes(8, "little") + header + fill * (4 * values)


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def etag(path: str, data: bytes) -> str:
    """The blob name huggingface_hub gives the file in the cache."""
    return hashlib.sha256(data).hexdigest() if is_lfs(path) else git_blob_id(data)


@dataclass
class Hold:
    """A file whose body is sent half, then held until ``release()``."""

    reached: threading.Event = field(default_factory=threading.Event)  # set once held
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


@dataclass
class _Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> files
    branches: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    token: str | None = None  # gated: only this token may download files


class FakeHub:
    def __init__(self) -> None:
        self._repos: dict[str, _Repo] = {}
        self._failing: dict[str, int] = {}  # file name -> HTTP status its GET answers
        self._holds: dict[str, Hold] = {}
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request served
        self._server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for hold in self._holds.values():
            hold.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # --- what the test sets up -----------------------------------------------------------------

    def publish(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """A new commit of ``repo_id`` with exactly ``files``, on ``branch``; returns its id."""
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo())
            digest = hashlib.sha1(f"{repo_id}\0{branch}\0{len(repo.commits)}".encode())
            for name in sorted(files):
                digest.update(f"{name}\0{etag(name, files[name])}\0".encode())
            commit = digest.hexdigest()
            repo.commits[commit] = dict(files)
            repo.branches[branch] = commit
            return commit

    def publish_dir(self, repo_id: str, directory: Path, branch: str = "main") -> str:
        """Publishes every file under ``directory`` (a snapshot: links are followed)."""
        files = {path.relative_to(directory).as_posix(): path.read_bytes()
                 for path in sorted(Path(directory).rglob("*")) if path.is_file()}
        return self.publish(repo_id, files, branch)

    def tag(self, repo_id: str, name: str, commit: str) -> None:
        with self._lock:
            self._repos[repo_id].branches[name] = commit

    def gate(self, repo_id: str, token: str) -> None:
        """Makes ``repo_id`` gated: files only for requests with this token."""
        self._repos[repo_id].token = token

    def fail(self, file_name: str, status: int = 500) -> None:
        """GETs of files named ``file_name`` (any repo) answer ``status``."""
        self._failing[file_name] = status

    def hold(self, file_name: str) -> Hold:
        """GETs of files named ``file_name`` send half the body, then wait for ``release()``."""
        hold = self._holds[file_name] = Hold()
        return hold

    def gets(self, file_name: str) -> int:
        """How many GETs of files named ``file_name`` were served."""
        return sum(1 for method, path in list(self.requests)
                   if method == "GET" and "/resolve/" in path and path.rsplit("/", 1)[-1] == file_name)

    # --- answering -----------------------------------------------------------------------------

    def _resolve(self, repo_id: str, revision: str) -> tuple[_Repo | None, str | None]:
        repo = self._repos.get(repo_id)
        if repo is None:
            return None, None
        commit = repo.branches.get(revision, revision if revision in repo.commits else None)
        return repo, commit


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that hang up (a stopped download) are part of the tests, not errors.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: pytest shows failures, not access logs

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _answer(self, *, head: bool) -> None:
            url = urlsplit(self.path)
            hub.requests.append((self.command, unquote(url.path)))
            parts = [unquote(part) for part in url.path.split("/")[1:]]
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._api(parts[2] + "/" + parts[3], parts[4:], parse_qs(url.query))
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve_file(parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]), head=head)
            else:
                self._error(404, "RepoNotFound", "not a Hub route")

        # -- /api/models/{repo}/... ------------------------------------------------------------

        def _api(self, repo_id: str, rest: list[str], query: dict[str, list[str]]) -> None:
            if not rest:
                rest = ["revision", "main"]
            if rest[0] not in ("revision", "tree") or len(rest) < 2:
                self._error(404, "RepoNotFound", "unknown route")
                return
            repo, commit = hub._resolve(repo_id, rest[1])
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            elif commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rest[1]}")
            elif rest[0] == "revision":
                self._json(_model_info(repo_id, repo, commit, blobs="blobs" in query))
            else:
                self._json([_tree_entry(name, data) for name, data in sorted(repo.commits[commit].items())])

        # -- /{repo}/resolve/{rev}/{path} ------------------------------------------------------

        def _resolve_file(self, repo_id: str, revision: str, path: str, *, head: bool) -> None:
            repo, commit = hub._resolve(repo_id, revision)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                return
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return
            if repo.token is not None:
                given = self.headers.get("Authorization", "")
                if given != f"Bearer {repo.token}":
                    status = 403 if given else 401
                    self._error(status, "GatedRepo", f"Access to model {repo_id} is restricted.")
                    return
            data = repo.commits[commit].get(path)
            if data is None:
                self._error(404, "EntryNotFound", f"{path} does not exist", commit=commit)
                return
            name = path.rsplit("/", 1)[-1]
            if not head and name in hub._failing:
                self._error(hub._failing[name], None, "the CDN failed")
                return
            start = _range_start(self.headers.get("Range"))
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", commit)
            if is_lfs(path):
                self.send_header("X-Linked-Etag", f'"{etag(path, data)}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("ETag", f'"{git_blob_id(data)}"')
            else:
                self.send_header("ETag", f'"{etag(path, data)}"')
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not head:
                self._send_body(name, body)

        def _send_body(self, name: str, body: bytes) -> None:
            hold = hub._holds.get(name)
            if hold is None:
                self.wfile.write(body)
                return
            half = len(body) // 2
            self.wfile.write(body[:half])
            self.wfile.flush()
            hold.reached.set()
            hold.released.wait(HOLD_TIMEOUT)
            try:
                self.wfile.write(body[half:])
            except OSError:
                pass  # the client went away meanwhile

        # -- answers ---------------------------------------------------------------------------

        def _json(self, value: object) -> None:
            body = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


def _model_info(repo_id: str, repo: _Repo, commit: str, *, blobs: bool) -> dict[str, object]:
    siblings = []
    for name, data in sorted(repo.commits[commit].items()):
        sibling: dict[str, object] = {"rfilename": name}
        if blobs:
            sibling.update(size=len(data), blobId=git_blob_id(data))
            if is_lfs(name):
                sibling["lfs"] = {"sha256": etag(name, data), "size": len(data), "pointerSize": 134}
        siblings.append(sibling)
    return {
        "_id": commit[:24], "id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
        "gated": "manual" if repo.token else False, "disabled": False, "tags": [],
        "siblings": siblings,
    }


def _tree_entry(name: str, data: bytes) -> dict[str, object]:
    entry: dict[str, object] = {"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)}
    if is_lfs(name):
        entry["lfs"] = {"oid": etag(name, data), "size": len(data), "pointerSize": 134}
    return entry


def _range_start(header: str | None) -> int:
    if header and header.startswith("bytes=") and header.endswith("-"):
        try:
            return int(header[len("bytes="):-1])
        except ValueError:
            return 0
    return 0
