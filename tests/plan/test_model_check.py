"""The completeness check of hub downloads (remote/model_check.py), on real directories and no host.

The same file is uploaded to hosts and run with the hub venv's python, so it is
also run here as a script, from outside the project, with a stand-in hub client.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from remote import model_check
from remote.model_check import MANIFEST, MARKER, ListingError, RemoteFile, compare, format_report, remote_files


def _write(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def _git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


MODEL = {
    "config.json": b'{"model_type": "qwen3"}',
    "model-00001-of-00002.safetensors": b"A" * 4096,
    "model-00002-of-00002.safetensors": b"B" * 3000,
    "tokenizer/vocab.json": b"{}",
}


def _listing(files: dict[str, bytes]) -> list[RemoteFile]:
    """What a hub lists: weights with their SHA-256 (LFS), small files with their git blob id."""
    return [RemoteFile(name, len(data), sha256=hashlib.sha256(data).hexdigest()) if name.endswith(".safetensors")
            else RemoteFile(name, len(data), git_sha1=_git_blob(data)) for name, data in files.items()]


def test_complete_directory_passes_and_its_manifest_checks_with_sha256sum(tmp_path: Path) -> None:
    _write(tmp_path, {**MODEL, ".cache/huggingface/download/x.metadata": b"cli's own file"})
    result = compare(tmp_path, _listing(MODEL))
    assert result.complete and not result.problems
    digest = model_check.record_complete(tmp_path, result)
    manifest = (tmp_path / MANIFEST).read_text()
    assert sorted(line.split("  ", 1)[1] for line in manifest.splitlines()) == sorted(MODEL)
    assert (tmp_path / MARKER).read_text().strip() == digest == hashlib.sha256(manifest.encode()).hexdigest()
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--quiet", "--strict", "-c", MANIFEST], cwd=tmp_path, check=True)


def test_missing_and_short_files_are_named_and_nothing_is_hashed(tmp_path: Path) -> None:
    files = dict(MODEL)
    del files["model-00002-of-00002.safetensors"]
    files["model-00001-of-00002.safetensors"] = b"A" * 1000
    _write(tmp_path, files)
    result = compare(tmp_path, _listing(MODEL))
    assert not result.complete and not result.hashed
    assert {(p.path, p.kind) for p in result.problems} == {
        ("model-00002-of-00002.safetensors", "missing"), ("model-00001-of-00002.safetensors", "short")}
    report = format_report("Qwen/Qwen3-8B", "modelscope", None, tmp_path, result)
    assert "missing  model-00002-of-00002.safetensors: expected 2.93 KiB" in report
    assert "short    model-00001-of-00002.safetensors: 1000 bytes of 4.00 KiB" in report
    assert report.splitlines()[-1].startswith("INCOMPLETE: 2 file(s) missing or short, 0 with wrong content, of 4")
    with pytest.raises(ValueError):
        model_check.record_complete(tmp_path, result)
    # The short file goes: no hub CLI resumes a file at its final path, and `hf download` may take it as complete.
    assert model_check.remove_bad_files(tmp_path, result) == ["model-00001-of-00002.safetensors"]
    assert not (tmp_path / "model-00001-of-00002.safetensors").exists() and (tmp_path / "config.json").exists()


def test_right_size_wrong_bytes_is_caught_by_the_hub_hash_and_removed(tmp_path: Path) -> None:
    _write(tmp_path, {**MODEL, "model-00002-of-00002.safetensors": b"C" * 3000,
                      "config.json": b'{"model_type": "qwen2"}'})
    result = compare(tmp_path, _listing(MODEL))
    assert {(p.path, p.kind) for p in result.problems} == {
        ("model-00002-of-00002.safetensors", "sha256"), ("config.json", "git-blob")}
    removed = model_check.remove_bad_files(tmp_path, result)
    assert sorted(removed) == ["config.json", "model-00002-of-00002.safetensors"]
    assert not (tmp_path / "config.json").exists() and (tmp_path / "tokenizer/vocab.json").exists()
    assert "removed, the next download fetches it again" in format_report("m", "huggingface", "v1", tmp_path,
                                                                           result, removed)


def test_modelscope_listing_is_normalised() -> None:
    entries = [
        {"Name": ".gitattributes", "Path": ".gitattributes", "Type": "blob", "Size": 1519},
        {"Name": "tokenizer", "Path": "tokenizer", "Type": "tree", "Size": 0},
        {"Path": "config.json", "Type": "blob", "Size": 728, "Sha256": "AB" * 32},
        {"Path": "model.safetensors", "Size": 16},  # modelscope.hub.api's get_model_files: Path and Size only
    ]
    assert remote_files(entries) == [RemoteFile("config.json", 728, sha256="ab" * 32),
                                     RemoteFile("model.safetensors", 16)]


def test_a_complete_check_says_which_files_had_no_hash_to_compare(tmp_path: Path) -> None:
    """A listing with sizes only (as modelscope.hub.api's get_model_files gives it since modelscope 1.40) leaves
    the bytes unchecked: the verdict says so, naming them, instead of claiming every hash matched."""
    _write(tmp_path, MODEL)
    hashed = _listing(MODEL)
    verdict = format_report("m", "modelscope", None, tmp_path, compare(tmp_path, hashed)).splitlines()[-1]
    assert verdict.startswith("complete: every file has the repository's size and hash; manifest")
    sizes_only = [RemoteFile(f.path, f.size) if f.path != "config.json" else f for f in hashed]
    result = compare(tmp_path, sizes_only)
    assert result.complete
    verdict = format_report("m", "modelscope", None, tmp_path, result).splitlines()[-1]
    assert verdict == ("complete: every file has the repository's size; 3 of 4 had no hash from the hub, their "
                       "bytes are unchecked (model-00001-of-00002.safetensors, model-00002-of-00002.safetensors, "
                       f"tokenizer/vocab.json); manifest {MANIFEST}")


def test_untyped_folder_in_a_listing_is_not_a_missing_file(tmp_path: Path) -> None:
    _write(tmp_path, MODEL)
    listing = remote_files([{"Path": "tokenizer", "Size": 0}, {"Path": "tokenizer/vocab.json", "Size": 2}])
    assert compare(tmp_path, listing).complete


@pytest.mark.parametrize("path", ["/etc/passwd", "../escape.bin", "a/../../b"])
def test_paths_outside_the_model_directory_are_refused(path: str) -> None:
    with pytest.raises(ListingError, match="unsafe path"):
        remote_files([{"Path": path, "Size": 1}])


def test_an_empty_listing_is_an_error_not_a_complete_model() -> None:
    with pytest.raises(ListingError, match="no files"):
        remote_files([{"Path": ".gitattributes", "Size": 10}])


FAKE_HUB = '''
import hashlib, json, os
class _Lfs:
    def __init__(self, size, sha256):
        self.size, self.sha256 = size, sha256
class RepoFile:
    def __init__(self, path, size, blob_id, lfs=None):
        self.path, self.size, self.blob_id, self.lfs = path, size, blob_id, lfs
class RepoFolder:
    def __init__(self, path):
        self.path = path
class HfApi:
    def __init__(self, endpoint=None):
        assert endpoint == "https://mirror.example", endpoint
    def list_repo_tree(self, repo_id, revision=None, recursive=False):
        assert (repo_id, revision, recursive) == ("org/tiny", "v2", True)
        for item in json.loads(os.environ["FAKE_TREE"]):
            if item.get("folder"):
                yield RepoFolder(item["path"])
            elif item.get("lfs"):
                yield RepoFile(item["path"], item["size"], "0" * 40, _Lfs(item["size"], item["lfs"]))
            else:
                yield RepoFile(item["path"], item["size"], item["blob"])
'''


def test_script_runs_outside_the_project_with_the_hub_client_only(tmp_path: Path) -> None:
    """As on the host: a copy of the file, run by a python that cannot import this project."""
    import json

    hub = tmp_path / "site" / "huggingface_hub"
    hub.mkdir(parents=True)
    (hub / "__init__.py").write_text(textwrap.dedent(FAKE_HUB))
    script = tmp_path / "model-check.py"
    shutil.copy(model_check.__file__, script)
    model = tmp_path / "model"
    _write(model, MODEL)
    tree = [{"path": "tokenizer", "folder": True}] + [
        {"path": f.path, "size": f.size, "lfs": f.sha256, "blob": f.git_sha1} for f in _listing(MODEL)]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "site"), "FAKE_TREE": json.dumps(tree)}
    argv = [sys.executable, str(script), "--source", "huggingface", "--model", "org/tiny", "--revision", "v2",
            "--dir", str(model), "--endpoint", "https://mirror.example"]

    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "complete:" in done.stdout and (model / MARKER).is_file() and (model / MANIFEST).is_file()

    (model / "model-00002-of-00002.safetensors").unlink()
    failed = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert failed.returncode == 1
    assert "missing  model-00002-of-00002.safetensors" in failed.stdout
    assert not (model / MARKER).exists(), "a stale marker must not survive a failed check"

    env["FAKE_TREE"] = "not json"
    broken = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert broken.returncode == 2 and "cannot list the files of org/tiny on huggingface" in broken.stdout
