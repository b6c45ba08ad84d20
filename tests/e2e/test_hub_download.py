"""The hub download path on a real host: `hf download` in the systemd oneshot, then remote/model_check.py.

The setting is tests/e2e/hubdownload.py's (one lab host, a fake Hugging Face endpoint on the lab bridge serving the
tiny model as `lab/tiny-llama`, the model stage alone, sized from the same endpoint); its safetensors file is an LFS
file behind a 302 to the "CDN", as on the Hub.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from hostlab import Lab
from remote.model_check import MARKER
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
# What the hub CLI keeps in the directory besides the files: its per-file metadata, locks and tree cache.
HF_OWN = ".cache/huggingface/"
WHEELHOUSE_HUB_VERSION = wheelhouse_version("huggingface_hub")


@pytest.fixture(scope="module")
def hub_lab(hostlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubLab]:
    yield from make_hub_lab(hostlab, tmp_path_factory.mktemp("hub-cache"), "huggingface", "hub-download")


def test_first_deploy_downloads_the_repository_in_a_oneshot(hub_lab: HubLab) -> None:
    upstreams = set(hub_lab.lab.proxy.upstreams)
    result = hub_lab.deploy()
    assert result.returncode == 0, result.failure(4000)
    host = hub_lab.host

    # The host's copy is the repository's files, byte for byte; besides them only our manifest and marker and the
    # hub CLI's own metadata. A real systemd oneshot ran `hf download`, then the check, whose report is in its journal.
    extra = hub_lab.assert_recorded_copy()
    assert extra and all(name.startswith(HF_OWN) for name in extra), extra
    tiny = tiny_files()
    journal = hub_lab.journal()
    assert f"model check: {MODEL_DIR} against {REPO} from huggingface: {len(tiny)} files" in journal, journal
    assert COMPLETE in journal, journal
    assert hub_lab.hub.url in host.run(f"systemctl show -p Environment {UNIT}").stdout

    # The hub CLI is the wheelhouse's (and pip reached no index: see the proxy below).
    version = host.run(f"{HUB_VENV}/bin/python -c 'import huggingface_hub as h; print(h.__version__)'").stdout
    assert version.strip() == WHEELHOUSE_HUB_VERSION

    # Who asked what: the planner (on the controller, so from the bridge's own address) sized the model from the
    # metadata, reading no more of the shard than its header; the host listed the tree and fetched every file,
    # the shard through the "CDN" redirect.
    assert {r["client"] for r in hub_lab.hub.log} == {hub_lab.lab.gateway, host.ip}
    planner = hub_lab.planner_requests()
    assert any(r["path"] == f"/api/models/{REPO}/revision/main" for r in planner)
    shard_reads = [r for r in planner if r["path"].endswith(SHARD)]
    assert shard_reads and all(r["range"] for r in shard_reads), planner
    assert (hub_lab.cache / "huggingface" / REPO.replace("/", "--") / f"{COMMIT}.json").is_file()
    fetched = {r["path"].rsplit("/", 1)[-1] for r in hub_lab.host_requests() if r["method"] == "GET"}
    assert set(tiny) <= fetched
    assert any(r["path"].startswith(f"/api/models/{REPO}/tree/") for r in hub_lab.host_requests())
    assert any(r["path"] == f"/cdn/hf/{REPO}/{SHARD}" and r["method"] == "GET" for r in hub_lab.host_requests())

    # The hub CLI phoned no one else: no update check (its stamp file is absent) and no new upstream through the
    # lab's egress proxy other than the host's apt sources.
    stamps = host.run("find / -xdev -name '.check_for_update_done' 2>/dev/null", check=False).stdout.split()
    assert stamps == [], stamps
    assert hub_lab.new_upstreams_outside_apt(upstreams) == set()


def test_rerun_with_the_marker_changes_nothing(hub_lab_ok: HubLab) -> None:
    hub_lab_ok.assert_rerun_changes_nothing()


def test_deleted_file_is_fetched_again(hub_lab_ok: HubLab) -> None:
    host = hub_lab_ok.host
    host.run(f"cd {MODEL_DIR} && rm {MARKER} tokenizer.json")
    result = hub_lab_ok.deploy()
    assert result.returncode == 0, result.failure(4000)
    assert hub_lab_ok.checksums() == expected_manifest()
    assert hub_lab_ok.marker() and COMPLETE in hub_lab_ok.journal()
    gets = [r["path"] for r in hub_lab_ok.host_requests() if r["method"] == "GET" and "/resolve/" in r["path"]]
    assert [path.rsplit("/", 1)[-1] for path in gets] == ["tokenizer.json"]  # the rest stayed


def test_damaged_files_are_named_removed_and_fetched_again(hub_lab_ok: HubLab) -> None:
    """A shard cut short and a config of the right size with other bytes, both with an old time (the hub CLI's
    metadata then takes them as complete), marker gone. Each deploy fails naming what is wrong and removes it: the
    short shard first (nothing is hashed while a file is short), then the config; the third ends identical."""
    host = hub_lab_ok.host
    size = host.run(f"stat -c %s {MODEL_DIR}/config.json").stdout.strip()
    host.run(f"cd {MODEL_DIR} && rm {MARKER} && truncate -s 1000 {SHARD} && printf '%{size}s' '' > config.json && "
             f"touch -d 2001-01-01 {SHARD} config.json")
    for wrong, report in ((SHARD, rf"short +{re.escape(SHARD)}: 1000 bytes of "),
                          ("config.json", r"git-blob config\.json: git blob [0-9a-f]{12}\.\.\., the repository has ")):
        failed = hub_lab_ok.deploy()
        assert failed.returncode != 0, failed.output[-3000:]
        journal = hub_lab_ok.journal()
        assert re.search(report + r".*; removed, the next download fetches it again", journal), journal
        assert re.search(report, failed.output), failed.failure(3000)  # the deploy's own output names it too
        assert host.run(f"test -e {MODEL_DIR}/{wrong}", check=False).returncode != 0
        assert hub_lab_ok.marker() is None

    result = hub_lab_ok.deploy()
    assert result.returncode == 0, result.failure(4000)
    assert hub_lab_ok.checksums() == expected_manifest()
    assert hub_lab_ok.marker() and COMPLETE in hub_lab_ok.journal()
    again = hub_lab_ok.deploy()
    assert again.returncode == 0 and again.changed == 0, again.failure(4000)


def test_wrong_bytes_from_the_hub_fail_the_deploy_naming_the_file(hub_lab_ok: HubLab) -> None:
    """Same size, other bytes: `hf download` takes them, the check refuses them by name and removes them. A short
    file: the CLI itself refuses it, naming it. Once the hub serves the right bytes again, the next deploy ends
    with an identical copy."""
    host, blob = hub_lab_ok.host, hub_lab_ok.blobs[SHARD]
    host.run(f"rm {MODEL_DIR}/{MARKER} {MODEL_DIR}/{SHARD}")

    blob.served = blob.head[:-16] + bytes(16)
    result = hub_lab_ok.deploy()
    assert result.returncode != 0, result.output[-3000:]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    assert re.search(rf"sha256 +{re.escape(SHARD)}: sha256 [0-9a-f]{{12}}\.\.\., the repository has "
                     f"{blob.sha256[:12]}\\.\\.\\.; removed", plain), result.failure(4000)
    assert "INCOMPLETE: 0 file(s) missing or short, 1 with wrong content, of" in plain
    assert hub_lab_ok.marker() is None
    assert host.run(f"test -e {MODEL_DIR}/{SHARD}", check=False).returncode != 0  # removed: fetched again next

    blob.served = blob.head[:-16]
    short = hub_lab_ok.deploy()
    assert short.returncode != 0, short.output[-3000:]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", short.output)
    assert re.search(rf"Consistency check failed: file should be of size {blob.size} but has size "
                     rf"{blob.size - 16} \(.*{re.escape(SHARD)}\)", plain), short.failure(4000)
    assert hub_lab_ok.marker() is None

    blob.served = None
    fixed = hub_lab_ok.deploy()
    assert fixed.returncode == 0, fixed.failure(4000)
    assert hub_lab_ok.checksums() == expected_manifest()
    assert hub_lab_ok.marker()
