"""A loopback (or lab-bridge) server speaking the Hugging Face and ModelScope hubs' HTTP APIs, for tests.

tests/sizing/test_hub.py sizes models from it (sizing/hub.py: model info, config, safetensors headers by Range);
tests/e2e/test_hub_download.py downloads a real model directory from it on a lab host with huggingface_hub's
`hf download` and lists it with ``HfApi.list_repo_tree`` (remote/model_check.py); tests/e2e/test_modelscope_download.py
does the same with `modelscope download` and modelscope_hub's ``HubApi.list_repo_files``. Its answers are
CONSTRUCTED from the documented / client-side shapes, not recorded (this machine cannot reach the hubs):
- Hugging Face: model_info (``GET /api/models/{repo}[/revision/{rev}]``: ``sha``, ``siblings``, ``safetensors``),
  the tree (``GET /api/models/{repo}/tree/{rev}?recursive=&expand=``: ``type``, ``oid`` (git blob id), ``size``,
  ``path``, ``lfs`` {oid (sha256), size, pointerSize}; one page, no ``Link`` header), and hf_hub_url
  (``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: ``X-Repo-Commit`` and ``ETag`` (git blob id) with
  ``Content-Length``; an LFS file answers 302 to a "CDN" with ``X-Linked-Etag`` (its sha256) and ``X-Linked-Size``,
  as huggingface_hub's get_hf_file_metadata reads them). No Xet header is ever sent, so the client downloads over
  plain HTTP with Range. Errors as hf_raise_for_status reads them (``X-Error-Code``).
- ModelScope, the legacy ``/api/v1`` routes as modelscope 1.40.2's client (modelscope_hub 0.5.1: _legacy_api.py,
  _download.py) calls them for `modelscope download REPO --local-dir DIR` with MODELSCOPE_ENDPOINT set (which stops
  it probing modelscope.cn and modelscope.ai for the repository): the file list (``GET
  /api/v1/models/{repo}/repo/files?Revision=&Recursive=True``: ``{"Code": 200, "Data": {"Files": [...]}}``, each
  with ``Path``, ``Name``, ``Type`` (blob/tree), ``Size``, ``Sha256`` (the client hashes a file already in the
  directory against it, and every download), ``Revision`` (the commit that last changed it), ``CommittedDate``);
  the files (``GET /api/v1/models/{repo}/repo?Revision=&FilePath=``: the bytes, or for an LFS file a 302 to the
  "CDN"; the client compares ``Content-Length`` with the listed size and resumes its ``FILE.incomplete`` with
  ``Range``). ``/api/v1/repos/internalAccelerationInfo`` (its Aliyun intra-cloud probe, 0.2 s) answers 404, as off
  Aliyun. Also ``/revisions`` (sizing/hub.py reads the branches). Errors in the API's envelope (``Code``,
  ``Message``, ``Success``), with the HTTP status, or HTTP 200 for a withdrawn model.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.parse
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TOKEN = "hf_TESTtokenNEVERprinted1234567890"
# Files a real repository keeps in LFS (huggingface's default .gitattributes patterns, the ones a model has).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".onnx")


class Blob:
    """A file the server serves: real bytes up to ``head``, then ``virtual`` made-up data bytes (counted).

    ``served``, when set, replaces the bytes a download GET returns (the listing, HEAD and hashes keep the real
    file's): a mirror serving a short or corrupt copy.
    """

    def __init__(self, head: bytes, virtual: int = 0, lfs: bool = False) -> None:
        self.head, self.virtual, self.lfs = head, virtual, lfs
        self.served: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.head) + self.virtual

    @cached_property
    def sha256(self) -> str:
        """The file's SHA-256; for a virtual file (never fully fetched) a stand-in derived from its head."""
        if self.virtual:
            return hashlib.sha256(self.head + str(self.size).encode()).hexdigest()
        return hashlib.sha256(self.head).hexdigest()

    @cached_property
    def git_sha1(self) -> str:
        """The git blob id (sha1 over ``blob SIZE\\0`` + content); a stand-in for a virtual file."""
        digest = hashlib.sha1(f"blob {self.size}\0".encode(), usedforsecurity=False)
        digest.update(self.head if not self.virtual else self.sha256.encode())
        return digest.hexdigest()


def repo_files(root: str | Path, lfs_suffixes: tuple[str, ...] = LFS_SUFFIXES) -> dict[str, Blob]:
    """A real local model directory as a repository's files (LFS by suffix, as a Hub repository keeps them)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): Blob(p.read_bytes(), lfs=p.name.endswith(lfs_suffixes))
            for p in sorted(root.rglob("*")) if p.is_file()}


class Repo:
    def __init__(self, files: dict[str, Blob], sha: str, *, gated: bool = False, private: bool | None = False,
                 params: dict[str, int] | None = None, branches: tuple[str, ...] = ("main",)) -> None:
        self.files, self.sha, self.gated, self.private, self.params = files, sha, gated, private, params
        self.refs = {b: sha for b in branches}


class FakeHub:
    """Both hubs on one port; ``cdn_host`` plays the CDN (another host name, same server).

    ``bind`` is 127.0.0.1 by default; a lab test binds the lab bridge's address so that its hosts reach it. A lab
    host resolves no other name of the controller, so there ``cdn_host=None`` serves the CDN from a second port of
    the same address: another origin all the same (huggingface_hub follows a redirect within the hub's origin and
    reads the file's metadata from the response that leaves it).
    """

    def __init__(self, bind: str = "127.0.0.1", cdn_host: str | None = "localhost") -> None:
        self.hf: dict[str, Repo] = {}
        self.ms: dict[str, Repo] = {}
        self.log: list[dict[str, Any]] = []
        self.weight_bytes_served = 0
        self.bytes_served = 0
        self.delay = 0.0
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                hub.handle(self, head=True)

            def do_GET(self) -> None:  # noqa: N802
                hub.handle(self, head=False)

        self.servers = [ThreadingHTTPServer((bind, 0), Handler) for _ in range(1 if cdn_host else 2)]
        self.server = self.servers[0]
        self.port = self.server.server_address[1]
        self.url = f"http://{bind}:{self.port}"
        self.cdn = (f"http://{cdn_host}:{self.port}/cdn" if cdn_host
                    else f"http://{bind}:{self.servers[1].server_address[1]}/cdn")
        for server in self.servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()

    # -- responses

    def send(self, req: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
             head: bool = False) -> None:
        req.send_response(status)
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if not head:
            req.wfile.write(body)
            with self.lock:
                self.bytes_served += len(body)

    def send_json(self, req: BaseHTTPRequestHandler, status: int, data: Any, head: bool = False,
                  headers: dict[str, str] | None = None) -> None:
        self.send(req, status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})}, head)

    def hf_error(self, req: BaseHTTPRequestHandler, status: int, code: str, message: str, head: bool) -> None:
        self.send_json(req, status, {"error": message}, head, {"X-Error-Code": code, "X-Error-Message": message})

    def serve_blob(self, req: BaseHTTPRequestHandler, blob: Blob, head: bool,
                   extra: dict[str, str] | None = None) -> None:
        if blob.served is not None and not head:  # a mirror serving other bytes than it lists
            blob = Blob(blob.served)
        rng = req.headers.get("Range")
        start, end = 0, blob.size - 1
        status = 200
        if rng:
            a, b = rng.removeprefix("bytes=").split("-")
            start, end, status = int(a), min(int(b) if b else blob.size - 1, blob.size - 1), 206
        data = blob.head[start:end + 1]
        made_up = max(0, end + 1 - max(start, len(blob.head)))
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", **(extra or {})}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
        if not head:
            with self.lock:
                self.weight_bytes_served += made_up
        self.send(req, status, data + b"\0" * made_up, headers, head)

    def authorized(self, req: BaseHTTPRequestHandler) -> bool:
        return req.headers.get("Authorization") == f"Bearer {TOKEN}"

    # -- routing

    def handle(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        url = urllib.parse.urlsplit(req.path)
        path = urllib.parse.unquote(url.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        with self.lock:
            self.log.append({"method": req.command, "host": req.headers.get("Host"), "path": req.path,
                             "client": req.client_address[0],
                             "range": req.headers.get("Range"), "auth": req.headers.get("Authorization"),
                             "cookie": req.headers.get("Cookie")})  # fmt: skip
        if self.delay:
            time.sleep(self.delay)
        parts = path.strip("/").split("/")
        if path.startswith("/api/v1/models/"):
            return self.modelscope(req, parts[3] + "/" + parts[4], parts[5:], query, head)
        if path.startswith("/api/models/") and len(parts) >= 6 and parts[4] == "revision":
            return self.hf_info(req, parts[2] + "/" + parts[3], "/".join(parts[5:]), head)
        if path.startswith("/api/models/") and len(parts) == 4:  # model_info without a revision: main
            return self.hf_info(req, parts[2] + "/" + parts[3], "main", head)
        if path.startswith("/api/models/") and len(parts) >= 6 and parts[4] == "tree":
            return self.hf_tree(req, parts[2] + "/" + parts[3], parts[5], "/".join(parts[6:]), query, head)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.hf_resolve(req, parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]), head)
        if parts[0] == "cdn":  # /cdn/{hub}/{org}/{name}/{file}
            repos = self.hf if parts[1] == "hf" else self.ms
            return self.serve_blob(req, repos[parts[2] + "/" + parts[3]].files["/".join(parts[4:])], head)
        self.send(req, 404, b"Not Found", head=head)

    def hf_repo(self, req: BaseHTTPRequestHandler, repo_id: str, head: bool) -> Repo | None:
        repo = self.hf.get(repo_id)
        if repo is None or (repo.private and not self.authorized(req)):
            status = 404 if req.headers.get("Authorization") else 401  # as the Hub: 401 without a token
            self.hf_error(req, status, "RepoNotFound", "Repository not found", head)
            return None
        return repo

    def hf_info(self, req: BaseHTTPRequestHandler, repo_id: str, rev: str, head: bool) -> None:
        repo = self.hf_repo(req, repo_id, head)
        if repo is None:
            return
        sha = repo.refs.get(rev) or (rev if rev == repo.sha else None)
        if sha is None:
            return self.hf_error(req, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
        info: dict[str, Any] = {
            "_id": "6878a1f1b0c2d3e4f5a6b7c8", "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0],
            "sha": sha, "private": repo.private, "gated": "manual" if repo.gated else False, "disabled": False,
            "library_name": "transformers", "tags": ["transformers", "safetensors"], "pipeline_tag": "text-generation",
            "siblings": [{"rfilename": name} for name in repo.files],
        }  # fmt: skip
        if repo.params:
            info["safetensors"] = {"parameters": repo.params, "total": sum(repo.params.values())}
        self.send_json(req, 200, info, head)

    def hf_resolve(self, req: BaseHTTPRequestHandler, repo_id: str, rev: str, name: str, head: bool) -> None:
        repo = self.hf_repo(req, repo_id, head)
        if repo is None:
            return
        if rev not in repo.refs and rev != repo.sha:
            return self.hf_error(req, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
        if repo.gated and not self.authorized(req):
            status = 403 if req.headers.get("Authorization") else 401
            msg = f"Access to model {repo_id} is restricted. You must have access to it and be authenticated."
            return self.hf_error(req, status, "GatedRepo", msg, head)
        blob = repo.files.get(name)
        if blob is None:
            return self.hf_error(req, 404, "EntryNotFound", f"{name} does not exist", head)
        common = {"X-Repo-Commit": repo.sha, "ETag": f'"{blob.git_sha1}"'}
        if blob.lfs:  # the Hub's ETag of the pointer file; the CDN's object is named by the linked ETag (sha256)
            location = f"{self.cdn}/hf/{repo_id}/{name}"
            return self.send(req, 302, b"", {**common, "Location": location, "X-Linked-Size": str(blob.size),
                                             "X-Linked-Etag": f'"{blob.sha256}"'}, head)  # fmt: skip
        self.serve_blob(req, blob, head, common)

    def hf_tree(self, req: BaseHTTPRequestHandler, repo_id: str, rev: str, under: str, query: dict[str, str],
                head: bool) -> None:
        """``list_repo_tree``: one page (no ``Link`` header); folders as ``directory`` entries when recursive."""
        repo = self.hf_repo(req, repo_id, head)
        if repo is None:
            return
        if rev not in repo.refs and rev != repo.sha:
            return self.hf_error(req, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
        prefix = under.strip("/") + "/" if under.strip("/") else ""
        recursive = query.get("recursive", "false").lower() == "true"
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for name, blob in repo.files.items():
            if not name.startswith(prefix):
                continue
            rel = name[len(prefix):]
            if "/" in rel and not recursive:
                folders.add(prefix + rel.split("/", 1)[0])
                continue
            parents = name.split("/")[:-1]
            folders.update("/".join(parents[:i + 1]) for i in range(len(parents)) if len(prefix) <= len(
                "/".join(parents[:i + 1])))
            entry: dict[str, Any] = {"type": "file", "oid": blob.git_sha1, "size": blob.size, "path": name}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": 134}
            entries.append(entry)
        entries += [{"type": "directory", "oid": hashlib.sha1(f.encode(), usedforsecurity=False).hexdigest(),
                     "size": 0, "path": f} for f in sorted(folders)]  # fmt: skip
        self.send_json(req, 200, sorted(entries, key=lambda e: e["path"]), head)

    def modelscope(self, req: BaseHTTPRequestHandler, repo_id: str, rest: list[str], query: dict[str, str],
                   head: bool) -> None:
        repo = self.ms.get(repo_id)
        envelope = {"RequestId": "8c2a8249-ce50-49f4-85ea-36debf918714"}
        if repo is None:
            return self.send_json(req, 404, {**envelope, "Code": 10010205001, "Success": False,
                                             "Message": f"model {repo_id} does not exist"}, head)  # fmt: skip
        if repo.private and req.headers.get("Cookie") != f"m_session_id={TOKEN}":
            return self.send_json(req, 401, {**envelope, "Code": 10010205401, "Success": False,
                                             "Message": "unauthorized"}, head)  # fmt: skip
        if repo.private is None:  # withdrawn: HTTP 200 with an error envelope, as the API also answers
            return self.send_json(req, 200, {**envelope, "Code": 10010205003, "Success": False,
                                             "Message": "model is offline for review"}, head)  # fmt: skip
        ok = {**envelope, "Code": 200, "Message": "success", "Success": True}
        revision = query.get("Revision")
        if rest != ["revisions"] and revision and revision not in repo.refs and revision != repo.sha:
            return self.send_json(req, 404, {**envelope, "Code": 10010205002, "Success": False,
                                             "Message": f"revision {revision} does not exist"}, head)  # fmt: skip
        if rest == ["revisions"]:
            branches = [{"Revision": b, "CreatedAt": 1753000000} for b in repo.refs]
            return self.send_json(req, 200, {**ok, "Data": {"RevisionMap": {"Branches": branches, "Tags": []}}}, head)
        if rest == ["repo", "files"]:
            files = [{"CommitMessage": "upload", "CommittedDate": 1753000000 + i, "CommitterName": "qwen",
                      "InCheck": False, "IsLFS": b.lfs, "Mode": "33188", "Name": n.rsplit("/", 1)[-1], "Path": n,
                      "Revision": repo.sha if i == len(repo.files) - 1 else f"{i:040x}",
                      "Sha256": b.sha256, "Size": b.size, "Type": "blob"}
                     for i, (n, b) in enumerate(repo.files.items())]  # fmt: skip
            return self.send_json(req, 200, {**ok, "Data": {"Files": files}}, head)
        if rest == ["repo"]:
            blob = repo.files.get(query.get("FilePath", ""))
            if blob is None:
                return self.send_json(req, 404, {**envelope, "Code": 10010205404, "Success": False,
                                                 "Message": "file not found"}, head)  # fmt: skip
            if blob.lfs:  # large files are served from object storage, like the CDN
                location = f"{self.cdn}/ms/{repo_id}/{query['FilePath']}"
                return self.send(req, 302, b"", {"Location": location}, head)
            return self.serve_blob(req, blob, head)
        self.send(req, 404, b"Not Found", head=head)
