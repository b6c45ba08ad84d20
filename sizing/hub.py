"""Size a model straight from its hub repository, without downloading a single weight.

A model released last week is not in the catalog, and downloading 60 GB to learn that it does not fit is
the wrong order. What sizing needs is small: ``config.json`` and the exact checkpoint bytes. The bytes
come from each safetensors shard's header (8-byte little-endian length, then JSON with dtype, shape and
data offsets per tensor), read with two HTTP Range requests per shard, as hf-mem does; no byte after a
header is ever requested.

Both hubs are spoken with the standard library only:

- Hugging Face (or any mirror implementing the same two routes): ``GET /api/models/{repo}/revision/{rev}``
  (``sha``, ``siblings``, ``safetensors``) and ``GET /{repo}/resolve/{rev}/{file}`` with ``Range``.
- ModelScope's REST API: ``/api/v1/models/{repo}/revisions``, ``/repo/files?Revision=&Recursive=true``
  and ``/repo?Revision=&FilePath=`` for file contents.

Results are cached per repository and resolved commit, so a re-run, ``--dry`` or an air-gapped planner
works offline once a model was seen; a branch name maps to the last commit seen for it. Tokens come from
the usual variables and travel only in request headers: never in errors, output or the cache.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

from sizing.errors import SizingError

log = logging.getLogger(__name__)

HUBS = ("huggingface", "modelscope")
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
MS_DEFAULT_ENDPOINT = "https://modelscope.cn"
DEFAULT_REVISION = {"huggingface": "main", "modelscope": "master"}
TIMEOUT_S = 20.0  # per request; a mirror slower than this is treated as unreachable
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit
MAX_JSON_BYTES = 32 * 1024 * 1024  # config.json / index / API answers; anything larger is not metadata
SHARD_WORKERS = 8
CACHE_VERSION = 1
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class HubModel:
    """What the hub told us about one repository at one commit (also the cache record)."""

    hub: str
    repo: str
    revision: str  # as asked (branch, tag or commit)
    sha: str  # the commit it resolved to
    config: dict[str, Any]
    weight_bytes: int | None  # exact tensor bytes when known
    weight_source: str  # how weight_bytes was obtained, for the reasons a user reads
    shards: dict[str, int] = field(default_factory=dict)  # shard file -> tensor bytes from its header
    params_by_dtype: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    from_cache: bool = False

    def to_cache(self) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION, "hub": self.hub, "repo": self.repo, "sha": self.sha, "config": self.config,
            "weight_bytes": self.weight_bytes, "weight_source": self.weight_source, "shards": self.shards,
            "params_by_dtype": self.params_by_dtype, "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }  # fmt: skip


class HubUnreachable(SizingError):
    """The hub did not answer and nothing is cached: a caller that knows the model some other way may go on."""


class _Unreachable(Exception):
    """The hub did not answer (DNS, refused, timeout, 5xx): the cache may still answer."""


class _HttpStatus(Exception):
    def __init__(self, status: int, headers: Message | Mapping[str, str], url: str, body: bytes = b"") -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        self.url = url
        self.body = body

    def header(self, name: str) -> str:
        return str(self.headers.get(name) or "")


# ----------------------------------------------------------------------------- settings from the environment


def cache_dir() -> Path:
    """``$VLLM_DEPLOY_HUB_CACHE``, else ``$XDG_CACHE_HOME/vllm-deploy/hub``, else ``~/.cache/vllm-deploy/hub``."""
    explicit = os.environ.get("VLLM_DEPLOY_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "vllm-deploy" / "hub"


def default_endpoint(hub: str) -> str:
    """The endpoint the hub's own client would use, else the public site.

    Hugging Face: HF_ENDPOINT. ModelScope, as the wheelhouse's modelscope 1.40.2 reads it (modelscope_hub's HubConfig):
    MODELSCOPE_ENDPOINT, else the deprecated MODELSCOPE_DOMAIN, a bare domain meaning https.
    """
    if hub == "huggingface":
        return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")
    explicit = os.environ.get("MODELSCOPE_ENDPOINT", "").strip()
    domain = explicit or os.environ.get("MODELSCOPE_DOMAIN", "").strip()
    if domain:
        return domain.rstrip("/") if "://" in domain else f"https://{domain.strip('/')}"
    return MS_DEFAULT_ENDPOINT


def hub_token(hub: str) -> str | None:
    """The token the hub's own client would send; never logged or stored."""
    if hub == "modelscope":
        return os.environ.get("MODELSCOPE_API_TOKEN") or None
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var):
            return os.environ[var].strip()
    hf_home = os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    path = os.environ.get("HF_TOKEN_PATH") or str(Path(hf_home) / "token")
    try:
        token = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


# ----------------------------------------------------------------------------- HTTP


class _Redirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects (the Hub sends weights to a CDN) but never carry credentials to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            for name in ("Authorization", "Cookie"):
                new.remove_header(name)
        return new


class _Http:
    """Minimal client: one timeout for every request, auth header on the hub's own host only."""

    def __init__(self, hub: str, token: str | None, timeout: float) -> None:
        self.timeout = timeout
        self.headers = {"User-Agent": "vllm-deploy-sizing/1"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
            if hub == "modelscope":  # the SDK's REST calls authenticate with this cookie
                self.headers["Cookie"] = f"m_session_id={token}"
        self.opener = urllib.request.build_opener(_Redirect())

    def get(self, url: str, *, byte_range: tuple[int, int] | None = None, limit: int = MAX_JSON_BYTES) -> bytes:
        """GET ``url`` (inclusive ``byte_range``); reads at most ``limit`` bytes even if a server ignores Range."""
        headers = dict(self.headers)
        if byte_range is not None:
            headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
            limit = byte_range[1] - byte_range[0] + 1
        request = urllib.request.Request(url, headers=headers, method="GET")
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                status = response.status
                if byte_range is not None and status == 200 and byte_range[0] > 0:
                    # Range ignored: skip to the offset without keeping it (only header bytes precede it).
                    _read_exact(response, byte_range[0], keep=False)
                data = _read_exact(response, limit + (0 if byte_range is not None else 1))
        except urllib.error.HTTPError as exc:
            body = b""
            try:
                body = exc.read(64 * 1024)
            except OSError:
                pass
            if exc.code >= 500 or exc.code == 429:
                raise _Unreachable(f"HTTP {exc.code}") from None
            raise _HttpStatus(exc.code, exc.headers, url, body) from None
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            reason = getattr(exc, "reason", exc)
            raise _Unreachable(str(reason) or type(exc).__name__) from None
        if byte_range is None and len(data) > limit:
            raise SizingError("model", f"{_strip_query(url)}: more than {limit} bytes; not a metadata file")
        return data


def _read_exact(response: Any, size: int, keep: bool = True) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = response.read(min(left, 1 << 20))
        if not chunk:
            break
        if keep:
            chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0]


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise SizingError("model", f"{what} is not valid JSON ({exc})") from None


# ----------------------------------------------------------------------------- safetensors headers


def header_tensor_bytes(header: Mapping[str, Any], where: str) -> tuple[int, dict[str, int]]:
    """Tensor bytes and parameter count per dtype of one safetensors header (offsets checked against shapes)."""
    total = 0
    params: dict[str, int] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = (int(x) for x in info["data_offsets"])
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            dtype = str(info["dtype"])
        except (KeyError, TypeError, ValueError):
            raise SizingError("model", f"{where}: tensor {name!r} has no dtype/shape/data_offsets") from None
        total += end - start
        params[dtype] = params.get(dtype, 0) + count
    return total, params


def _shard_header(conn: _Http, url: str, where: str) -> tuple[int, dict[str, int]]:
    """Two Range requests: the 8-byte length, then exactly the JSON header; nothing after it."""
    raw = conn.get(url, byte_range=(0, 7))
    if len(raw) != 8:
        raise SizingError("model", f"{where}: too short to be a safetensors file")
    (length,) = struct.unpack("<Q", raw)
    if not 2 <= length <= MAX_HEADER_BYTES:
        raise SizingError("model", f"{where}: header length {length} is not plausible; not a safetensors file")
    data = conn.get(url, byte_range=(8, 8 + length - 1))
    if len(data) != length:
        raise SizingError("model", f"{where}: header cut short ({len(data)} of {length} bytes)")
    header = _json(data, f"{where} header")
    if not isinstance(header, Mapping):
        raise SizingError("model", f"{where}: header is not a JSON object")
    return header_tensor_bytes(header, where)


# ----------------------------------------------------------------------------- the two hubs


class _Hub:
    """One hub's routes; subclasses map its API and errors onto the same few calls."""

    name = ""

    def __init__(self, endpoint: str, conn: _Http, repo: str, token_sent: bool) -> None:
        self.endpoint = endpoint
        self.http = conn
        self.repo = repo
        self.token_sent = token_sent
        self.api_params: dict[str, int] = {}

    def resolve(self, revision: str) -> tuple[str, list[str]]:
        """The commit ``revision`` points at, and the repository's file names."""
        raise NotImplementedError

    def file_url(self, sha: str, revision: str, path: str) -> str:
        raise NotImplementedError

    def fetch(self, sha: str, revision: str, path: str) -> bytes:
        try:
            return self.http.get(self.file_url(sha, revision, path))
        except _HttpStatus as exc:
            raise self.error(exc, path) from None

    def error(self, exc: _HttpStatus, path: str | None = None) -> SizingError:
        raise NotImplementedError


class _HuggingFace(_Hub):
    name = "huggingface"

    def resolve(self, revision: str) -> tuple[str, list[str]]:
        url = f"{self.endpoint}/api/models/{self.repo}/revision/{urllib.parse.quote(revision, safe='')}"
        try:
            info = _json(self.http.get(url), f"{url} answer")
        except _HttpStatus as exc:
            raise self.error(exc) from None
        if not isinstance(info, Mapping) or not isinstance(info.get("sha"), str):
            raise SizingError("model", f"{self.endpoint} answered for {self.repo} without a commit sha; is it a hub?")
        files = [str(s.get("rfilename")) for s in info.get("siblings") or () if isinstance(s, Mapping)]
        safetensors = info.get("safetensors")
        if isinstance(safetensors, Mapping) and isinstance(safetensors.get("parameters"), Mapping):
            self.api_params = {str(k): int(v) for k, v in safetensors["parameters"].items()}
        return info["sha"], files

    def file_url(self, sha: str, revision: str, path: str) -> str:
        return f"{self.endpoint}/{self.repo}/resolve/{sha}/{urllib.parse.quote(path)}"

    def error(self, exc: _HttpStatus, path: str | None = None) -> SizingError:
        code = exc.header("X-Error-Code")
        page = f"{self.endpoint}/{self.repo}"
        if code == "GatedRepo" or (exc.status in (401, 403) and path is not None):
            if self.token_sent:
                fix = ("the token sent has no access to it yet: accept the licence on " + page +
                       " with the account that owns the token (or use a token with read access)")
            else:
                fix = f"accept the licence on {page}, then set HF_TOKEN to a read token of that account"
            status = f"HTTP {exc.status}"
            return SizingError("model", f"{self.repo} is gated or private on {self.endpoint} ({status}): {fix}")
        if code == "RevisionNotFound":
            return SizingError("revision", f"{self.repo} has no revision by that name on {self.endpoint}")
        if code == "EntryNotFound" or (exc.status == 404 and path is not None):
            return SizingError("model", f"{self.repo}: {path} not found on {self.endpoint} (HTTP 404)")
        if code == "RepoNotFound" or exc.status in (401, 404):
            # The Hub answers 401 for a repo that does not exist (or is private) when no token was sent.
            private = "" if self.token_sent else "; a private repository needs HF_TOKEN"
            return SizingError("model", f"{self.repo} not found on {self.endpoint} (HTTP {exc.status}): check the "
                                        f"org/name spelling{private}")
        return SizingError("model", f"{self.endpoint} refused {self.repo} (HTTP {exc.status})")


class _ModelScope(_Hub):
    name = "modelscope"

    def _api(self, url: str) -> Any:
        try:
            body = _json(self.http.get(url), f"{_strip_query(url)} answer")
        except _HttpStatus as exc:
            raise self.error(exc) from None
        if not isinstance(body, Mapping):
            raise SizingError("model", f"{_strip_query(url)}: unexpected answer (not a JSON object)")
        if body.get("Code") not in (200, "200") or body.get("Success") is False:
            # ModelScope may answer HTTP 200 with {"Code": <error>, "Message": ..., "Success": false}.
            message = str(body.get("Message") or "no reason given")[:200]
            raise SizingError("model", f"{self.repo} not available on {self.endpoint}: {message}")
        return body.get("Data") or {}

    def resolve(self, revision: str) -> tuple[str, list[str]]:
        data = self._api(f"{self.endpoint}/api/v1/models/{self.repo}/revisions")
        refs = data.get("RevisionMap") or {} if isinstance(data, Mapping) else {}
        names = [str(r.get("Revision")) for key in ("Branches", "Tags") for r in refs.get(key) or ()
                 if isinstance(r, Mapping)]  # fmt: skip
        if names and revision not in names and not _SHA_RE.match(revision):
            raise SizingError("revision", f"{self.repo} has no revision {revision!r} on {self.endpoint}; it has: "
                                          f"{', '.join(names[:10])}")
        query = urllib.parse.urlencode({"Revision": revision, "Recursive": "True"})
        data = self._api(f"{self.endpoint}/api/v1/models/{self.repo}/repo/files?{query}")
        entries = [f for f in (data.get("Files") or ()) if isinstance(f, Mapping) and f.get("Type") != "tree"]
        files = [str(f.get("Path") or f.get("Name")) for f in entries]
        if _SHA_RE.match(revision):
            return revision, files
        # No commit id for the ref itself in this API: each file's Revision is the commit that last changed
        # it, so the newest of those is the commit the ref points at (for what sizing reads).
        newest = max(entries, key=lambda f: int(f.get("CommittedDate") or 0), default=None)
        sha = str(newest.get("Revision")) if newest and newest.get("Revision") else ""
        if not sha:
            raise SizingError("model", f"{self.endpoint} listed no files with a commit for {self.repo}@{revision}")
        return sha, files

    def file_url(self, sha: str, revision: str, path: str) -> str:
        query = urllib.parse.urlencode({"Revision": revision, "FilePath": path})
        return f"{self.endpoint}/api/v1/models/{self.repo}/repo?{query}"

    def error(self, exc: _HttpStatus, path: str | None = None) -> SizingError:
        what = f"{path} of {self.repo}" if path else self.repo
        if exc.status in (401, 403):
            fix = ("the token in MODELSCOPE_API_TOKEN has no access" if self.token_sent else
                   "set MODELSCOPE_API_TOKEN to your SDK token (modelscope.cn/my/myaccesstoken)")
            return SizingError("model", f"{what} is private or gated on {self.endpoint} (HTTP {exc.status}): {fix}")
        if exc.status == 404:
            return SizingError("model", f"{what} not found on {self.endpoint} (HTTP 404): check the org/name spelling")
        return SizingError("model", f"{self.endpoint} refused {what} (HTTP {exc.status})")


# ----------------------------------------------------------------------------- cache


def _repo_dir(root: Path, hub: str, repo: str) -> Path:
    return root / hub / repo.replace("/", "--")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _from_cache(root: Path, hub: str, repo: str, revision: str, sha: str, notes: tuple[str, ...]) -> HubModel | None:
    record = _read_json(_repo_dir(root, hub, repo) / f"{sha}.json")
    if not isinstance(record, Mapping) or record.get("version") != CACHE_VERSION:
        return None
    return HubModel(
        hub=hub, repo=repo, revision=revision, sha=sha, config=dict(record["config"]),
        weight_bytes=record.get("weight_bytes"), weight_source=str(record.get("weight_source") or "cache"),
        shards=dict(record.get("shards") or {}), params_by_dtype=dict(record.get("params_by_dtype") or {}),
        notes=notes, from_cache=True,
    )  # fmt: skip


def _remember_ref(root: Path, hub: str, repo: str, revision: str, sha: str) -> None:
    path = _repo_dir(root, hub, repo) / "refs.json"
    refs = _read_json(path)
    refs = dict(refs) if isinstance(refs, Mapping) else {}
    refs[revision] = {"sha": sha, "seen": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_json(path, refs)


# ----------------------------------------------------------------------------- the entry points


def _check_inputs(repo: str, hub: str, endpoint: str) -> None:
    if hub not in HUBS:
        raise SizingError("hub", f"unknown hub {hub!r}; use one of: {', '.join(HUBS)}")
    if not _REPO_RE.match(repo or ""):
        raise SizingError("model", f"{repo!r} is not a hub id; give ORG/NAME as on the hub page")
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.username or parts.password:
        raise SizingError("hub_endpoint", f"{endpoint!r} is not an http(s) URL without credentials")


def fetch_model(
    repo: str,
    hub: str = "huggingface",
    revision: str | None = None,
    endpoint: str | None = None,
    *,
    timeout: float = TIMEOUT_S,
    cache: Path | None = None,
) -> HubModel:
    """Config and exact checkpoint bytes of ``repo`` at ``revision``: cache first for commits, else the hub."""
    endpoint = (endpoint or default_endpoint(hub)).rstrip("/")
    _check_inputs(repo, hub, endpoint)
    revision = revision or DEFAULT_REVISION[hub]
    root = cache if cache is not None else cache_dir()
    if _SHA_RE.match(revision):  # a commit never changes: no request at all once seen
        cached = _from_cache(root, hub, repo, revision, revision, ())
        if cached is not None:
            return cached
    token = hub_token(hub)
    conn = _Http(hub, token, timeout)
    client: _Hub = (_HuggingFace if hub == "huggingface" else _ModelScope)(endpoint, conn, repo, token is not None)
    offline = [var for var in ("VLLM_DEPLOY_HUB_OFFLINE", "HF_HUB_OFFLINE" if hub == "huggingface" else "")
               if var and os.environ.get(var, "").lower() in ("1", "true", "yes")]
    try:
        if offline:
            raise _Unreachable(f"{offline[0]} is set")
        sha, files = client.resolve(revision)
    except _Unreachable as exc:
        return _offline(root, hub, repo, revision, endpoint, str(exc))
    _remember_ref(root, hub, repo, revision, sha)
    cached = _from_cache(root, hub, repo, revision, sha, ())
    if cached is not None:
        return cached
    try:
        model = _read_repo(client, repo, revision, sha, files)
    except _Unreachable as exc:
        raise HubUnreachable("model", f"hub {endpoint} stopped answering while reading {repo}@{revision} ({exc}); "
                                      "nothing was cached, run again") from None
    _write_json(_repo_dir(root, hub, repo) / f"{sha}.json", model.to_cache())
    return model


def _offline(root: Path, hub: str, repo: str, revision: str, endpoint: str, reason: str) -> HubModel:
    refs = _read_json(_repo_dir(root, hub, repo) / "refs.json")
    ref = refs.get(revision) if isinstance(refs, Mapping) else None
    if isinstance(ref, Mapping) and isinstance(ref.get("sha"), str):
        note = (f"hub {endpoint} unreachable ({reason}): using {repo}@{revision} as last seen on "
                f"{ref.get('seen', '?')}, commit {ref['sha'][:12]}")
        cached = _from_cache(root, hub, repo, revision, ref["sha"], (note,))
        if cached is not None:
            return cached
    mirror = "--hub-endpoint (HF_ENDPOINT, the hf_endpoint setting) to a mirror" if hub == "huggingface" else \
        "--hub-endpoint (MODELSCOPE_ENDPOINT, the modelscope_endpoint setting) to a reachable ModelScope site"
    raise HubUnreachable(
        "model",
        f"hub {endpoint} unreachable ({reason}) and {repo}@{revision} was never seen, so nothing is cached in "
        f"{_repo_dir(root, hub, repo)}; point {mirror}, or size from a local copy (--model DIR, "
        "model_source = 'local')",
    )


def _read_repo(client: _Hub, repo: str, revision: str, sha: str, files: list[str]) -> HubModel:
    names = set(files)
    where = f"{client.endpoint} {repo}@{revision}"
    if files and "config.json" not in names:
        gguf = " (GGUF repositories are not supported)" if any(f.endswith(".gguf") for f in files) else ""
        raise SizingError("model", f"{where} has no config.json{gguf}; vLLM serves transformers-format repositories")
    config = _json(client.fetch(sha, revision, "config.json"), f"{where} config.json")
    if not isinstance(config, dict):
        raise SizingError("model", f"{where} config.json is not a JSON object")
    notes: list[str] = []
    if "quantization_config" not in config:
        # Older GPTQ/AWQ exports keep it beside config.json; vLLM reads these files too.
        for extra in ("quantize_config.json", "quant_config.json"):
            if extra in names:
                qc = _json(client.fetch(sha, revision, extra), f"{where} {extra}")
                if isinstance(qc, dict):
                    qc.setdefault("quant_method", "awq" if "w_bit" in qc else "gptq")
                    config["quantization_config"] = qc
                    notes.append(f"quantization from {extra}")
                break
    shards: list[str] = []
    index_total: int | None = None
    if "model.safetensors.index.json" in names:
        index = _json(client.fetch(sha, revision, "model.safetensors.index.json"), f"{where} safetensors index")
        weight_map = index.get("weight_map") if isinstance(index, Mapping) else None
        if isinstance(weight_map, Mapping):
            shards = sorted({str(v) for v in weight_map.values()})
        try:
            index_total = int(index["metadata"]["total_size"])
        except (KeyError, TypeError, ValueError):
            index_total = None
    elif "model.safetensors" in names:
        shards = ["model.safetensors"]
    if not shards:
        return HubModel(client.name, repo, revision, sha, config, None, "config.json (no safetensors in the repo)",
                        params_by_dtype=client.api_params, notes=tuple(notes))
    urls = [(s, client.file_url(sha, revision, s)) for s in shards]
    try:
        with ThreadPoolExecutor(max_workers=min(SHARD_WORKERS, len(urls))) as pool:
            sizes = list(pool.map(lambda item: _shard_header(client.http, item[1], f"{where} {item[0]}"), urls))
    except _HttpStatus as exc:
        raise client.error(exc, shards[0]) from None
    params: dict[str, int] = {}
    for _, by_dtype in sizes:
        for dtype, count in by_dtype.items():
            params[dtype] = params.get(dtype, 0) + count
    total = sum(b for b, _ in sizes)
    if index_total is not None and index_total != total:
        notes.append(f"index total_size {index_total} differs from the headers' {total}; the headers are used")
    return HubModel(
        client.name, repo, revision, sha, config, total, f"safetensors headers of {len(shards)} shard(s)",
        shards={s: b for s, (b, _) in zip(shards, sizes, strict=True)}, params_by_dtype=params, notes=tuple(notes),
    )


def model_from_hub(
    repo: str,
    hub: str = "huggingface",
    revision: str | None = None,
    endpoint: str | None = None,
    *,
    timeout: float = TIMEOUT_S,
) -> Any:
    """A ModelSpec sized from hub metadata (no weights downloaded); see :func:`fetch_model`."""
    from sizing.model import model_from_config

    found = fetch_model(repo, hub, revision, endpoint, timeout=timeout)
    for note in found.notes:  # the CLI prints them itself; a deploy sees them in its log
        log.warning("%s: %s", repo, note)
    return model_from_config(found.config, name=repo, weight_bytes=found.weight_bytes)
