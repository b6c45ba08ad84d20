"""Is a hub download complete? The repository's file list against the model directory.

This one file is both a module and a script. The tests import its pure parts
(normalising a hub's file list, comparing it with a directory, the report, the
manifest); the model stage uploads it verbatim to the host, where the download
oneshot runs it with the hub venv's python right after the hub CLI:

    python model-check.py --source modelscope --model Qwen/Qwen3-8B --dir /srv/models/Qwen3-8B

So it imports only the standard library at module level (the hub client is
imported inside the function that lists files) and nothing of this project.

Why this and not "config.json exists": a hub CLI that stopped half-way, a
resumed file that came out short, or a shard the mirror did not serve all leave
a config.json behind, and vLLM then fails an hour later on a missing or truncated
safetensors shard. The check prints each file that is missing, short or wrong, so
the unit's journal (which the controller prints when the unit fails) names it;
only when every file is there with the repository's size and hash does it write
the manifest, then the completion marker.

Hashes: sizes are compared first, and nothing is hashed while a file is missing
or short. Then every expected file is hashed once (SHA-256, plus the git blob id
for Hugging Face files outside LFS). That reads the model once at disk speed (a
60 GB model takes about a minute on NVMe, a few on SATA), on the host inside the
oneshot, once per download, against the hours the download took; and it is the
only way to catch a shard of the right size with wrong bytes (a corrupt resume).
Every file's SHA-256 goes into the manifest, in `sha256sum` format, so
`sha256sum -c` re-checks the directory later, as for a synced local model.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = ".vllm-deploy-manifest.sha256"
MARKER = ".vllm-deploy-complete"
# Git metadata of the repository, not model files: the hub CLIs differ in whether they fetch them.
GIT_METADATA = frozenset({".gitattributes", ".gitignore"})
CHUNK = 8 << 20
# Problems listed one per line in the report; the rest are counted (the controller shows the journal's tail).
REPORT_LINES = 20


class ListingError(RuntimeError):
    """The hub's file list could not be read or makes no sense."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of the repository as the hub lists it; a hash is None where the hub gives none."""

    path: str
    size: int | None
    sha256: str | None = None
    git_sha1: str | None = None


@dataclass(frozen=True)
class Problem:
    """What is wrong with one expected file."""

    path: str
    kind: str  # missing | short | size | sha256 | git-blob
    detail: str

    @property
    def bad_bytes(self) -> bool:
        """The file is there but its bytes are wrong: the hub CLIs would skip it, so it must go.

        A short file too: neither CLI resumes a file in place (hf resumes its own `.incomplete` copy under
        `.cache/huggingface/`, ModelScope its temporary folder), and `hf download` takes a file at its final path
        as complete when its metadata there names the commit and the file is not newer than it: a shard cut short
        with its time kept would stay short on every run."""
        return self.kind in ("short", "size", "sha256", "git-blob")


@dataclass(frozen=True)
class CheckResult:
    """The comparison of one directory with the repository's file list."""

    expected: tuple[RemoteFile, ...]
    problems: tuple[Problem, ...]
    sha256: dict[str, str] = field(default_factory=dict)
    hashed: bool = False

    @property
    def complete(self) -> bool:
        return self.hashed and not self.problems

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.expected)


def _get(entry: Any, *names: str) -> Any:
    for name in names:
        value = entry.get(name) if isinstance(entry, Mapping) else getattr(entry, name, None)
        if value not in (None, ""):
            return value
    return None


def _safe_path(path: str) -> str:
    """A relative path inside the model directory; anything else is refused (the check may delete files)."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\\" in path:
        raise ListingError(f"the hub listed an unsafe path {path!r}")
    return pure.as_posix()


def remote_files(entries: Iterable[Any]) -> list[RemoteFile]:
    """Normalise a hub's listing: ModelScope's dicts (Path, Size, Sha256, Type) or our Hugging Face dicts.

    Folders (Type "tree") and git metadata are left out; a listing without types may still hold
    folders, which compare() recognises on disk.
    """
    files: dict[str, RemoteFile] = {}
    for entry in entries:
        kind = str(_get(entry, "Type", "type") or "blob").lower()
        if kind in ("tree", "directory", "dir", "folder"):
            continue
        path = _get(entry, "Path", "path", "rfilename")
        if path is None:
            raise ListingError(f"a listed file has no path: {entry!r}")
        path = _safe_path(str(path).rstrip("/"))
        if path in GIT_METADATA or path in (MANIFEST, MARKER):
            continue
        size = _get(entry, "Size", "size")
        sha256 = _get(entry, "Sha256", "sha256")
        git_sha1 = _get(entry, "git_sha1")
        files[path] = RemoteFile(path=path, size=int(size) if size is not None else None,
                                 sha256=str(sha256).lower() if sha256 else None,
                                 git_sha1=str(git_sha1).lower() if git_sha1 else None)
    if not files:
        raise ListingError("the hub listed no files for this repository and revision")
    return sorted(files.values(), key=lambda f: f.path)


def _digests(path: Path, git_blob: bool) -> tuple[str, str | None]:
    """SHA-256 of the file and, when asked, its git blob id (sha1 over "blob SIZE\\0" + content)."""
    sha256 = hashlib.sha256()
    sha1 = None
    if git_blob:
        sha1 = hashlib.sha1(usedforsecurity=False)
        sha1.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest() if sha1 is not None else None


def human(size: int | None) -> str:
    if size is None:
        return "? bytes"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size} bytes"


def compare(root: str | Path, expected: Sequence[RemoteFile], hash_files: bool = True) -> CheckResult:
    """Each expected file present with its size; then, if all are, its hash where the hub gave one.

    Files on disk the repository does not list (the CLIs' own caches, our manifest) are ignored.
    """
    root = Path(root)
    problems: list[Problem] = []
    present: list[RemoteFile] = []
    for remote in expected:
        local = root / remote.path
        if local.is_dir() and not remote.size:
            continue  # a folder in a listing that does not type its entries
        if not local.is_file():
            problems.append(Problem(remote.path, "missing", f"expected {human(remote.size)}"))
            continue
        size = local.stat().st_size
        if remote.size is not None and size < remote.size:
            problems.append(Problem(remote.path, "short", f"{human(size)} of {human(remote.size)}"))
        elif remote.size is not None and size != remote.size:
            problems.append(Problem(remote.path, "size", f"{human(size)}, the repository has {human(remote.size)}"))
        else:
            present.append(remote)
    if problems or not hash_files:
        return CheckResult(tuple(expected), tuple(problems))
    digests: dict[str, str] = {}
    for remote in present:
        sha256, git_sha1 = _digests(root / remote.path, git_blob=remote.git_sha1 is not None)
        digests[remote.path] = sha256
        if remote.sha256 and sha256 != remote.sha256:
            problems.append(Problem(remote.path, "sha256", f"sha256 {sha256[:12]}..., the repository has "
                                                           f"{remote.sha256[:12]}..."))
        elif remote.git_sha1 and git_sha1 != remote.git_sha1:
            problems.append(Problem(remote.path, "git-blob", f"git blob {git_sha1[:12] if git_sha1 else '?'}..., "
                                                             f"the repository has {remote.git_sha1[:12]}..."))
    return CheckResult(tuple(expected), tuple(problems), sha256=digests, hashed=True)


def format_report(model: str, source: str, revision: str | None, root: str | Path, result: CheckResult,
                  removed: Sequence[str] = ()) -> str:
    """What the journal shows: one line per problem (file named), and a verdict line last."""
    where = f"{model}{'@' + revision if revision else ''} from {source}"
    lines = [f"model check: {root} against {where}: {len(result.expected)} files, {human(result.total_bytes)}"]
    for problem in result.problems[:REPORT_LINES]:
        lines.append(f"  {problem.kind:8} {problem.path}: {problem.detail}"
                     + ("; removed, the next download fetches it again" if problem.path in removed else ""))
    if len(result.problems) > REPORT_LINES:
        lines.append(f"  ... and {len(result.problems) - REPORT_LINES} more")
    if result.problems:
        missing = sum(p.kind in ("missing", "short") for p in result.problems)
        wrong = len(result.problems) - missing
        lines.append(f"INCOMPLETE: {missing} file(s) missing or short, {wrong} with wrong content, of "
                     f"{len(result.expected)}; run the deploy again to resume the download")
    elif result.complete and (unhashed := [f.path for f in result.expected if not (f.sha256 or f.git_sha1)]):
        lines.append(f"complete: every file has the repository's size; {len(unhashed)} of {len(result.expected)} "
                     f"had no hash from the hub, their bytes are unchecked ({', '.join(unhashed[:5])}"
                     f"{', ...' if len(unhashed) > 5 else ''}); manifest {MANIFEST}")
    elif result.complete:
        lines.append(f"complete: every file has the repository's size and hash; manifest {MANIFEST}")
    else:
        lines.append("sizes match; hashes not checked")
    return "\n".join(lines)


def manifest_text(result: CheckResult) -> str:
    """`sha256sum` format, sorted: the same manifest a synced local model gets."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(result.sha256.items()))


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_complete(root: str | Path, result: CheckResult) -> str:
    """Write the manifest, then the marker holding the manifest's digest; returns that digest."""
    if not result.complete:
        raise ValueError("only a complete check is recorded")
    root = Path(root)
    text = manifest_text(result)
    _write_atomic(root / MANIFEST, text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    _write_atomic(root / MARKER, digest + "\n")
    return digest


def remove_bad_files(root: str | Path, result: CheckResult) -> list[str]:
    """Delete files whose bytes are wrong: both hub CLIs skip a file that is already there."""
    removed = []
    for problem in result.problems:
        if problem.bad_bytes:
            (Path(root) / problem.path).unlink(missing_ok=True)
            removed.append(problem.path)
    return removed


# --------------------------------------------------------------------------- on the host: the hubs' listings


def list_modelscope(model: str, revision: str | None, endpoint: str | None) -> list[Any]:
    """ModelScope's file list with each file's SHA-256 (the listing's Sha256).

    modelscope 1.40 keeps its client in modelscope_hub, whose HubApi.list_repo_files gives FileInfo entries with
    path, size, type and sha256. The old facade, modelscope.hub.api's get_model_files, there keeps only Path and
    Size: the check would hash nothing it could compare. It is used only with an SDK that lacks modelscope_hub,
    whose get_model_files still passes the API's dicts (Sha256 and Type included). Either client reads its
    endpoint from MODELSCOPE_ENDPOINT (or MODELSCOPE_DOMAIN) when none is given.
    """
    try:
        from modelscope_hub.api import HubApi
    except ImportError:
        from modelscope.hub.api import HubApi as LegacyHubApi

        kwargs: dict[str, Any] = {"recursive": True}
        if revision:
            kwargs["revision"] = revision
        return list(LegacyHubApi(endpoint=endpoint).get_model_files(model, **kwargs))
    api = HubApi(endpoint=endpoint, user_agent={"invoked_by": "vllm-deploy-model-check"})
    return list(api.list_repo_files(model, "model", revision=revision or "master", recursive=True))


def list_huggingface(model: str, revision: str | None, endpoint: str | None) -> list[dict[str, Any]]:
    """The Hub's tree (through the mirror endpoint): LFS files carry their SHA-256, others their git blob id."""
    from huggingface_hub import HfApi

    entries = []
    for item in HfApi(endpoint=endpoint).list_repo_tree(model, revision=revision, recursive=True):
        if not hasattr(item, "size"):
            continue  # RepoFolder
        lfs = getattr(item, "lfs", None)
        entries.append({
            "path": item.path,
            "size": item.size,
            "sha256": getattr(lfs, "sha256", None) if lfs else None,
            "git_sha1": None if lfs else getattr(item, "blob_id", None),
        })
    return entries


def list_files(source: str, model: str, revision: str | None, endpoint: str | None) -> list[Any]:
    if source == "modelscope":
        return list_modelscope(model, revision, endpoint)
    return list_huggingface(model, revision, endpoint or os.environ.get("HF_ENDPOINT"))


def main(argv: Sequence[str] | None = None) -> int:
    """0: complete, manifest and marker written; 1: incomplete (files named); 2: the list could not be read."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("modelscope", "huggingface"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--revision")
    parser.add_argument("--endpoint", help="the hub's endpoint (a mirror); default: HF_ENDPOINT or the Hub, "
                                           "MODELSCOPE_ENDPOINT or modelscope.cn")
    args = parser.parse_args(argv)
    root = Path(args.dir)
    (root / MARKER).unlink(missing_ok=True)
    try:
        expected = remote_files(list_files(args.source, args.model, args.revision, args.endpoint))
    except Exception as error:  # network, auth, an SDK without the call: say which, fail the unit
        print(f"model check: cannot list the files of {args.model} on {args.source}: "
              f"{type(error).__name__}: {error}", flush=True)
        return 2
    result = compare(root, expected)
    removed = remove_bad_files(root, result) if result.problems else []
    print(format_report(args.model, args.source, args.revision, root, result, removed), flush=True)
    if not result.complete:
        return 1
    record_complete(root, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
