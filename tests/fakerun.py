"""Run the pyinfra CLI against `@fake` hosts and keep what the deploy would have done.

Usage: python tests/fakerun.py OUTDIR pyinfra-args...

pyinfra's fake connector answers commands from recorded outputs but discards
uploads; this wrapper keeps every uploaded file (and every secret file written
from stdin by tasks.secret_files, and every file of a tar stream sent by
tasks.directory_copy) under OUTDIR/<host>/<remote path> and every
command under OUTDIR/<host>/commands.txt, so whole-deploy tests can assert the
rendered files and the operations of a real pyinfra run. A FactSections command
is answered section by section (tests.fakehosts.answer_fact_sections).
"""

from __future__ import annotations

import base64
import io
import os
import sys
import tarfile
from pathlib import Path

from pyinfra.connectors.fake import FakeConnector


def _host_dir(connector: FakeConnector) -> Path:
    name = connector.host.name.replace("@fake/", "").replace("/", "_")
    path = Path(os.environ["FAKERUN_OUT"]) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


_run = FakeConnector.run_shell_command


def run_shell_command(self, command, *args, **kwargs):
    text = command if isinstance(command, str) else command.get_masked_value()
    secret_dest = getattr(command, "secret_dest", None)  # tasks.secret_files: the content comes on stdin
    if secret_dest and kwargs.get("_stdin") is not None:
        target = _host_dir(self) / "files" / secret_dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(kwargs["_stdin"])
    copy_dest = getattr(command, "copy_dest", None)  # tasks.directory_copy: a base64 tar stream on stdin
    if copy_dest and kwargs.get("_stdin") is not None:
        target = _host_dir(self) / "files" / copy_dest.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        stream = base64.b64decode("".join(kwargs["_stdin"].readlines()))
        with tarfile.open(fileobj=io.BytesIO(stream)) as archive:
            archive.extractall(target, filter="data")
    with open(_host_dir(self) / "commands.txt", "a", encoding="utf-8") as handle:
        handle.write(text.replace("\n", "\\n") + "\n")
    return _run(self, command, *args, **kwargs)


def put_file(self, filename_or_io, remote_filename, *args, **kwargs) -> bool:
    target = _host_dir(self) / "files" / remote_filename.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(filename_or_io, str):
        data = Path(filename_or_io).read_bytes()
    else:
        position = filename_or_io.tell()
        data = filename_or_io.read()
        filename_or_io.seek(position)
        if isinstance(data, str):
            data = data.encode()
    target.write_bytes(data if isinstance(data, bytes) else io.BytesIO(data).getvalue())
    return True


if __name__ == "__main__":
    os.environ["FAKERUN_OUT"] = str(Path(sys.argv[1]).resolve())
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.fakehosts import answer_fact_sections

    answer_fact_sections()
    FakeConnector.run_shell_command = run_shell_command
    FakeConnector.put_file = put_file
    from pyinfra_cli.main import main

    sys.argv = ["pyinfra", *sys.argv[2:]]
    main()
