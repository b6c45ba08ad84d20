"""The ModelScope download path on a real host: `modelscope download` in the systemd oneshot, then the check.

The setting is tests/e2e/hubdownload.py's: one lab host and a fake ModelScope (tests/fakehub.py, the `/api/v1` routes
modelscope 1.40.2's client calls) on the lab bridge, serving the tiny model as `lab/tiny-llama` on the branch
`master`; its safetensors file is an LFS file behind a 302 to the "CDN". The download unit gets the
`modelscope_endpoint` setting as MODELSCOPE_ENDPOINT; the planner sizes the model from the same setting.

Where ModelScope's CLI differs from `hf download`: it hashes every file already in the directory against the
listing's Sha256 and fetches again what differs, and it hashes each download too, so a damaged file is repaired by
the CLI itself (no failed deploy first) and wrong bytes from the hub fail the CLI, naming the file, before the
check runs. The check's own naming of a damaged file is shown by running the unit's check command by hand.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator

import pytest

from hostlab import Lab
from remote.model_check import MARKER
from tasks.model_files import CHECK_SCRIPT
from tests.e2e.hubdownload import (
    COMMIT,
    COMPLETE,
    HUB_VENV,
    MODEL_DIR,
    REPO,
    SHARD,
    UNIT,
    HubLab,
    expected_manifest,
    tiny_files,
    wheelhouse_version,
)
from tests.e2e.hubdownload import hub_lab as make_hub_lab

pytestmark = pytest.mark.hosts
WHEELHOUSE_MODELSCOPE_VERSION = wheelhouse_version("modelscope")
API = f"/api/v1/models/{REPO}"
LISTING = f"{API}/repo/files"


def fetched(hub_lab: HubLab) -> list[str]:
    """The files the host asked the API for (sorted), by FilePath."""
    names = [dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r["path"]).query)).get("FilePath")
             for r in hub_lab.host_requests() if r["path"].startswith(f"{API}/repo?")]
    return sorted(name for name in names if name)


def check_by_hand(hub_lab: HubLab) -> tuple[int, str]:
    """The unit's second step, as its ExecStart runs it, from a shell on the host."""
    done = hub_lab.host.run(f"{HUB_VENV}/bin/python /opt/vllm/{CHECK_SCRIPT} --source modelscope --model {REPO} "
                            f"--dir {MODEL_DIR} --endpoint {hub_lab.hub.url}", check=False)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def hub_lab(hostlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubLab]:
    yield from make_hub_lab(hostlab, tmp_path_factory.mktemp("ms-cache"), "modelscope", "ms-download")


def test_first_deploy_downloads_the_repository_in_a_oneshot(hub_lab: HubLab) -> None:
    upstreams = set(hub_lab.lab.proxy.upstreams)
    result = hub_lab.deploy()
    assert result.returncode == 0, result.failure(4000)
    host = hub_lab.host

    # The host's copy is the repository's files, byte for byte; besides them only our manifest and marker (the CLI
    # keeps its partial files beside their targets while it downloads, and its locks under ~/.cache/modelscope).
    assert hub_lab.assert_recorded_copy() == []
    tiny = tiny_files()

    # A real systemd oneshot ran `modelscope download`, then the check, whose report (every file's hash compared:
    # the listing's Sha256 reached it) is in its journal.
    journal = hub_lab.journal()
    assert f"model check: {MODEL_DIR} against {REPO} from modelscope: {len(tiny)} files" in journal, journal
    assert COMPLETE in journal, journal
    assert "deprecated" not in journal.lower(), journal  # neither MODELSCOPE_DOMAIN nor --model/--local_dir
    environment = host.run(f"systemctl show -p Environment {UNIT}").stdout
    assert f"MODELSCOPE_ENDPOINT={hub_lab.hub.url}" in environment and "HF_ENDPOINT" not in environment

    # The CLI is the wheelhouse's (and pip reached no index: see the proxy below).
    version = host.run(f"{HUB_VENV}/bin/python -c 'import modelscope; print(modelscope.__version__)'").stdout
    assert version.strip() == WHEELHOUSE_MODELSCOPE_VERSION

    # Who asked what: the planner sized the model from the same endpoint (the branches, the listing, no more of the
    # shard than its header); the host listed the files (the CLI, then the check) and fetched every file once,
    # the shard through the "CDN" redirect.
    assert {r["client"] for r in hub_lab.hub.log} == {hub_lab.lab.gateway, host.ip}
    planner = hub_lab.planner_requests()
    assert any(r["path"] == f"{API}/revisions" for r in planner)
    shard_reads = [r for r in planner if r["path"].endswith(SHARD)]
    assert shard_reads and all(r["range"] for r in shard_reads), planner
    assert (hub_lab.cache / "modelscope" / REPO.replace("/", "--") / f"{COMMIT}.json").is_file()
    assert fetched(hub_lab) == tiny
    listings = [r for r in hub_lab.host_requests() if r["path"].startswith(f"{LISTING}?")]
    assert len(listings) == 2 and all("Revision=master" in r["path"] for r in listings), listings
    assert any(r["path"] == f"/cdn/ms/{REPO}/{SHARD}" for r in hub_lab.host_requests())
    asked = {urllib.parse.urlsplit(r["path"]).path for r in hub_lab.host_requests()}
    assert asked <= {LISTING, f"{API}/repo", f"/cdn/ms/{REPO}/{SHARD}", "/api/v1/repos/internalAccelerationInfo"}

    # The CLI phoned no one else: no new upstream through the lab's egress proxy but the host's apt sources.
    assert hub_lab.new_upstreams_outside_apt(upstreams) == set()


def test_rerun_with_the_marker_changes_nothing(hub_lab_ok: HubLab) -> None:
    hub_lab_ok.assert_rerun_changes_nothing()


def test_deleted_file_is_fetched_again_alone(hub_lab_ok: HubLab) -> None:
    hub_lab_ok.host.run(f"cd {MODEL_DIR} && rm {MARKER} tokenizer.json")
    result = hub_lab_ok.deploy()
    assert result.returncode == 0, result.failure(4000)
    assert hub_lab_ok.checksums() == expected_manifest()
    assert hub_lab_ok.marker() and COMPLETE in hub_lab_ok.journal()
    assert fetched(hub_lab_ok) == ["tokenizer.json"]  # the rest stayed


def test_damaged_files_are_fetched_again_by_the_cli(hub_lab_ok: HubLab) -> None:
    """A shard cut short and a config of the right size with other bytes, both with an old time, marker gone: the
    CLI hashes what is there against the listing and fetches those two alone; one deploy ends identical."""
    host = hub_lab_ok.host
    size = host.run(f"stat -c %s {MODEL_DIR}/config.json").stdout.strip()
    host.run(f"cd {MODEL_DIR} && rm {MARKER} && truncate -s 1000 {SHARD} && printf '%{size}s' '' > config.json && "
             f"touch -d 2001-01-01 {SHARD} config.json")
    result = hub_lab_ok.deploy()
    assert result.returncode == 0, result.failure(4000)
    assert fetched(hub_lab_ok) == ["config.json", SHARD]
    assert hub_lab_ok.checksums() == expected_manifest()
    assert hub_lab_ok.marker() and COMPLETE in hub_lab_ok.journal()


def test_the_check_names_and_removes_damaged_and_short_files(hub_lab_ok: HubLab) -> None:
    """The unit's check, run by hand on a damaged directory (what a CLI that trusted the files there would leave):
    a config of the right size whose SHA-256 differs from the listing's is named and removed; then a shard cut
    short (the check hashes nothing while a file is missing or short). The next deploy fetches those two alone."""
    host = hub_lab_ok.host
    size = host.run(f"stat -c %s {MODEL_DIR}/config.json").stdout.strip()
    for damage, wrong, report in (
            (f"printf '%{size}s' '' > config.json", "config.json",
             r"sha256 +config\.json: sha256 [0-9a-f]{12}\.\.\., the repository has "),
            (f"truncate -s 1000 {SHARD}", SHARD, rf"short +{re.escape(SHARD)}: 1000 bytes of ")):
        host.run(f"cd {MODEL_DIR} && {damage}")
        code, out = check_by_hand(hub_lab_ok)
        assert code == 1, out
        assert re.search(report + r".*; removed, the next download fetches it again", out), out
        assert host.run(f"test -e {MODEL_DIR}/{wrong}", check=False).returncode != 0
        assert hub_lab_ok.marker() is None
    result = hub_lab_ok.deploy()
    assert result.returncode == 0, result.failure(4000)
    assert fetched(hub_lab_ok) == ["config.json", SHARD]
    assert hub_lab_ok.checksums() == expected_manifest()
    again = hub_lab_ok.deploy()
    assert again.returncode == 0 and again.changed == 0, again.failure(4000)


def test_wrong_bytes_from_the_hub_fail_the_deploy_naming_the_file(hub_lab_ok: HubLab) -> None:
    """Same size, other bytes: the CLI refuses them after its retries (hash mismatch), naming the file, and keeps
    none of them. A short file: the CLI refuses it, naming the file and both sizes. Once the hub serves the right
    bytes again, the next deploy ends with an identical copy."""
    host, blob = hub_lab_ok.host, hub_lab_ok.blobs[SHARD]
    host.run(f"rm {MODEL_DIR}/{MARKER} {MODEL_DIR}/{SHARD}")

    blob.served = blob.head[:-16] + bytes(16)
    result = hub_lab_ok.deploy()
    assert result.returncode != 0, result.output[-3000:]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    assert re.search(rf"{re.escape(SHARD)}: \[E2020\] Hash mismatch for {re.escape(SHARD)}: expected "
                     rf"{blob.sha256[:16]}\.\.\., got [0-9a-f]{{16}}\.\.\.", plain), result.failure(4000)
    assert "model check:" not in hub_lab_ok.journal()  # the unit stopped at the CLI
    assert hub_lab_ok.marker() is None
    assert host.run(f"ls {MODEL_DIR} | grep -c {SHARD} || true").stdout.strip() == "0"  # nor a partial file
    assert fetched(hub_lab_ok).count(SHARD) >= 2  # the CLI tried again before giving up

    blob.served = blob.head[:-16]
    short = hub_lab_ok.deploy()
    assert short.returncode != 0, short.output[-3000:]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", short.output)
    assert re.search(rf"Server announced {blob.size - 16} bytes for {re.escape(SHARD)} but the repository lists "
                     rf"{blob.size} bytes", plain), short.failure(4000)
    assert hub_lab_ok.marker() is None

    blob.served = None
    fixed = hub_lab_ok.deploy()
    assert fixed.returncode == 0, fixed.failure(4000)
    assert hub_lab_ok.checksums() == expected_manifest()
    assert hub_lab_ok.marker() and fetched(hub_lab_ok) == [SHARD]
