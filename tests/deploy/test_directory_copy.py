"""The one-stream directory copy (wheelhouse, local model), against the host's real tools: bash, base64, GNU tar.

The command text the operation yields is run by a real bash here with the stream the operation would write on
its stdin (through pyinfra's own stdin writer), so what lands is what a host would hold.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest
from pyinfra.connectors.util import write_stdin

from facts import commands, parsers
from facts.model import FileStamp
from tasks import directory_copy
from tasks.directory_copy import (
    LazyLines,
    TarStdin,
    TarUnpack,
    base64_lines,
    files_to_send,
    local_files,
    stale_files,
)
from tasks.model_files import MANIFEST, MARKER, verify_command

HOSTILE_NAME = "d ;$(touch pwned)`touch pwned`'q\"%h$HOME&|>x"


def source_tree(root: Path) -> Path:
    """Files of several sizes (empty, one block, not a block multiple, several stream lines) and a subdirectory."""
    (root / "sub dir").mkdir(parents=True)
    (root / "empty").write_bytes(b"")
    (root / "block").write_bytes(b"b" * 512)
    (root / "sub dir" / "odd.whl").write_bytes(os.urandom(1000))
    (root / "big.safetensors").write_bytes(os.urandom(2 * directory_copy.STREAM_CHUNK + 12345))
    for i, path in enumerate(sorted(p for p in root.rglob("*") if p.is_file())):
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))
    return root


def unpack(dest: Path, stdin: TarStdin, cwd: Path, cut_lines: int | None = None) -> subprocess.CompletedProcess:
    """The operation's unpack command, run by bash with the stdin pyinfra's writer would send."""
    buffer = io.BytesIO()
    buffer.close = lambda: None  # write_stdin closes the channel when done
    write_stdin(stdin, buffer)
    data = buffer.getvalue()
    if cut_lines is not None:
        data = b"".join(data.splitlines(keepends=True)[:cut_lines])
    command = TarUnpack(str(dest), stdin).get_raw_value()
    return subprocess.run(["bash", "-c", command], cwd=cwd, input=data, capture_output=True, timeout=60)


def host_listing(dest: Path) -> dict[str, FileStamp]:
    """The host-side listing command, run for real, through its parser."""
    out = subprocess.run(["bash", "-c", commands.directory_listing(str(dest))], capture_output=True, text=True,
                         check=True).stdout
    return parsers.parse_directory_listing(out)


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


def test_the_stream_lands_byte_for_byte_with_modes_and_times_into_a_hostile_path(tmp_path: Path) -> None:
    src = source_tree(tmp_path / "src")
    dest = tmp_path / HOSTILE_NAME / "wheelhouse"
    local = local_files(src)
    result = unpack(dest, TarStdin(str(src), list(local), local, "test"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert digests(dest) == digests(src)
    assert {p.name: p.stat().st_mode & 0o777 for p in dest.rglob("*")} == {
        "empty": 0o644, "block": 0o644, "big.safetensors": 0o644, "odd.whl": 0o644, "sub dir": 0o755}
    assert host_listing(dest) == local, "tar restores each time: the next listing matches, nothing is sent again"
    assert files_to_send(local, host_listing(dest)) == []
    assert not list(tmp_path.rglob("pwned"))


def test_a_cut_stream_fails_and_the_next_copy_sends_only_what_is_not_complete(tmp_path: Path) -> None:
    src = source_tree(tmp_path / "src")
    dest = tmp_path / "dest"
    local = local_files(src)
    order = ["block", "empty", "big.safetensors", "sub dir/odd.whl"]  # the small ones fit in the first line
    cut = unpack(dest, TarStdin(str(src), order, local, "test"), tmp_path, cut_lines=2)
    assert cut.returncode != 0, "a stream cut in the middle of a file must fail the command"
    remote = host_listing(dest)
    assert remote and remote != local
    again = files_to_send(local, remote)
    assert again == ["big.safetensors", "sub dir/odd.whl"], "the complete files are skipped, the cut one goes again"
    assert unpack(dest, TarStdin(str(src), again, local, "test"), tmp_path).returncode == 0
    assert digests(dest) == digests(src)


def test_only_files_with_another_size_or_time_are_sent_and_stale_ones_listed_except_kept_ones() -> None:
    local = {"a.whl": FileStamp(10, 1), "b.whl": FileStamp(20, 2), "c.whl": FileStamp(30, 3)}
    remote = {"a.whl": FileStamp(10, 1), "b.whl": FileStamp(21, 2), "c.whl": FileStamp(30, 4),
              "old.whl": FileStamp(5, 5), ".vllm-deploy-synced": FileStamp(65, 6)}
    assert files_to_send(local, remote) == ["b.whl", "c.whl"]
    assert files_to_send(local, {}) == list(local)
    assert stale_files(local, remote, keep=[".vllm-deploy-synced"]) == ["old.whl"]


def test_kept_paths_are_neither_listed_nor_sent(tmp_path: Path) -> None:
    src = source_tree(tmp_path / "src")
    (src / MARKER).write_text("x")
    assert MARKER not in local_files(src, exclude=[MARKER, MANIFEST]) and "empty" in local_files(src)


def test_a_file_that_changes_size_after_the_listing_fails_the_copy(tmp_path: Path) -> None:
    src = source_tree(tmp_path / "src")
    local = local_files(src)
    (src / "block").write_bytes(b"short")
    with pytest.raises(OSError, match="changed while it was copied"):
        list(TarStdin(str(src), ["block"], local, "test").readlines())


def test_base64_lines_decode_to_the_concatenated_chunks_whatever_their_cut() -> None:
    import base64
    chunks = [os.urandom(n) for n in (1, 7, 3000, 0, 4096, 5)]
    for size in (3, 6, 3 * 1024):
        lines = list(base64_lines(iter(chunks), size))
        assert all(line.endswith("\n") and "=" not in line for line in lines[:-1])
        assert base64.b64decode("".join(lines)) == b"".join(chunks)


def test_pyinfra_writes_the_stream_as_it_is_produced_not_first_into_a_list() -> None:
    """pyinfra's writer wraps a non-list iterable (a generator) in a list of one item; LazyLines passes as a list
    while its lines are produced one write at a time."""
    produced: list[str] = []

    def lines():
        for i in range(3):
            produced.append(f"line {i}")
            yield f"line {i}\n"

    seen_at_write: list[int] = []
    buffer = io.BytesIO()
    buffer.close = lambda: None
    original = buffer.write
    buffer.write = lambda data: (seen_at_write.append(len(produced)), original(data))[1]
    write_stdin(LazyLines(lines()), buffer)
    assert buffer.getvalue() == b"line 0\nline 1\nline 2\n"
    assert seen_at_write == [1, 2, 3]


def test_progress_is_logged_in_mib_of_the_total(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    src = source_tree(tmp_path / "src")
    local = local_files(src)
    monkeypatch.setattr(directory_copy, "PROGRESS_SECONDS", 0.0)
    with caplog.at_level("INFO", logger="pyinfra"):
        list(TarStdin(str(src), list(local), local, "[h] copying").readlines())
    lines = [r.getMessage() for r in caplog.records if "MiB sent" in r.getMessage()]
    total = sum(stamp.size for stamp in local.values()) / 2**20
    assert lines and all(line.startswith("[h] copying: ") and f"/{total:.0f} MiB sent" in line for line in lines)


def test_a_model_file_that_fails_its_checksum_is_removed_so_the_next_copy_sends_it(tmp_path: Path) -> None:
    """The copy skips a same-size, same-time file: without its removal a damaged one would stay forever."""
    model = tmp_path / HOSTILE_NAME
    model.mkdir()
    (model / "good.bin").write_bytes(b"good")
    (model / "bad.bin").write_bytes(b"XXXX")
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in (("good.bin", b"good"), ("bad.bin", b"wght"))}
    (model / MANIFEST).write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    result = subprocess.run(["sh", "-c", verify_command(str(model), "digest")], capture_output=True, text=True,
                            cwd=tmp_path, timeout=30)
    assert result.returncode != 0 and "bad.bin: FAILED" in result.stderr and "next run copies them" in result.stderr
    assert sorted(p.name for p in model.iterdir()) == sorted(["good.bin", MANIFEST])
    (model / "bad.bin").write_bytes(b"wght")
    ok = subprocess.run(["sh", "-c", verify_command(str(model), "digest")], capture_output=True, text=True,
                        cwd=tmp_path, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert (model / MARKER).read_text() == "digest\n"
    assert not list(tmp_path.rglob("pwned"))
