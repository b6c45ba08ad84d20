"""The hub download path on a real host: `hf download` in the systemd oneshot, then remote/model_check.py.

One lab host and one fake Hugging Face endpoint (tests/fakehub.py) for the whole module. The endpoint runs in this
process on the lab bridge's address (the only address of the controller a lab host reaches) and serves the tiny
model's real directory as the repository `lab/tiny-llama`; its safetensors file is an LFS file behind a 302 to the
"CDN", as on the Hub. The deploy is the model stage alone (tests/e2e/model_only.py: planning, then `model_files`,
which starts the download unit itself), so vLLM is never installed; the hub CLI is, from the offline wheelhouse.

The planner sizes the model from the same endpoint (the name is in no catalog): the pyinfra runs get the hub
online (the suite sets VLLM_DEPLOY_HUB_OFFLINE) with a cache of this module's own.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hostlab import Lab, TestHost
from hostlab.deployrun import TINY_MODEL, WHEELHOUSE, RunResult, lab_host, run_pyinfra
from remote.model_check import MANIFEST
from tasks.model_files import DOWNLOAD_UNIT, MARKER, local_manifest
from tests.fakehub import FakeHub, Repo, repo_files

pytestmark = pytest.mark.hosts
REPO = "lab/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
MODEL_DIR = "/srv/models/tiny-llama"
UNIT = f"{DOWNLOAD_UNIT}.service"
SHARD = "model.safetensors"
COMPLETE = "complete: every file has the repository's size and hash"
# What the hub CLI keeps in the directory besides the files: its per-file metadata, locks and tree cache.
HF_OWN = ".cache/huggingface/"
HUB_VENV = "/opt/vllm/hub-venv"
WHEELHOUSE_HUB_VERSION = next(WHEELHOUSE.glob("huggingface_hub-*.whl")).name.split("-")[1]


class HubLab:
    """The module's shared state: the lab, its fake hub, the host and its inventory entry."""

    def __init__(self, lab: Lab, hub: FakeHub, host: TestHost, cache: Path) -> None:
        self.lab, self.hub, self.host, self.cache = lab, hub, host, cache
        self.entry = lab_host(host, model=REPO, model_source="huggingface", model_local_path=None,
                              hf_endpoint=hub.url)

    @property
    def blobs(self) -> dict[str, Any]:
        return self.hub.hf[REPO].files

    def deploy(self) -> RunResult:
        """The model stage; the planner may reach the fake hub (and only it), with this module's sizing cache."""
        self.hub.log.clear()
        return run_pyinfra([self.entry], "tests/e2e/model_only.py", timeout=900, env_overrides={
            "VLLM_DEPLOY_HUB_OFFLINE": None, "VLLM_DEPLOY_HUB_CACHE": str(self.cache), "HF_ENDPOINT": None})

    def host_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.hub.log if r["client"] == self.host.ip]

    def files(self) -> list[str]:
        out = self.host.run(f"cd {MODEL_DIR} && find . -type f | sed 's|^./||' | sort").stdout
        return out.split()

    def checksums(self) -> str:
        """`sha256sum` lines of the model's files on the host: neither ours nor the hub CLI's own."""
        out = self.host.run(f"cd {MODEL_DIR} && find . -type f ! -name '.vllm-deploy-*' ! -path './.cache/*' "
                            "| sed 's|^./||' | sort | xargs sha256sum").stdout
        return "\n".join(sorted(out.splitlines())) + "\n"

    def marker(self) -> str | None:
        got = self.host.run(f"cat {MODEL_DIR}/{MARKER}", check=False)
        return got.stdout.strip() if got.returncode == 0 else None

    def journal(self) -> str:
        """The download unit's journal since its latest start."""
        return self.host.run(f"journalctl -u {UNIT} --no-pager -o cat", check=False).stdout.rsplit(
            "Starting ", 1)[-1]


def expected_manifest() -> str:
    return "\n".join(sorted(local_manifest(TINY_MODEL).splitlines())) + "\n"


@pytest.fixture(scope="module")
def hub_lab(hostlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubLab]:
    hub = FakeHub(bind=hostlab.gateway, cdn_host=None)
    hub.hf[REPO] = Repo(repo_files(TINY_MODEL), COMMIT)
    host = hostlab.add_host("hub-download")
    try:
        yield HubLab(hostlab, hub, host, tmp_path_factory.mktemp("hub-cache"))
    finally:
        host.kill()
        hub.stop()


@pytest.fixture
def hub_lab_ok(hub_lab: HubLab) -> Iterator[HubLab]:
    """The module's host with a complete download, whatever an earlier test of the module left; the hub honest."""
    if hub_lab.marker() is None:
        result = hub_lab.deploy()
        assert result.returncode == 0, result.failure(4000)
    yield hub_lab
    for blob in hub_lab.blobs.values():
        blob.served = None


def test_first_deploy_downloads_the_repository_in_a_oneshot(hub_lab: HubLab) -> None:
    upstreams = set(hub_lab.lab.proxy.upstreams)
    result = hub_lab.deploy()
    assert result.returncode == 0, result.failure(4000)
    host = hub_lab.host

    # The host's copy is the repository's files, byte for byte; besides them only our manifest and marker and the
    # hub CLI's own metadata.
    assert hub_lab.checksums() == expected_manifest()
    tiny = sorted(p.relative_to(TINY_MODEL).as_posix() for p in TINY_MODEL.rglob("*") if p.is_file())
    extra = sorted(set(hub_lab.files()) - set(tiny) - {MANIFEST, MARKER})
    assert extra and all(name.startswith(HF_OWN) for name in extra), extra
    manifest = host.run(f"cat {MODEL_DIR}/{MANIFEST}").stdout
    assert sorted(manifest.splitlines()) == expected_manifest().splitlines()
    assert hub_lab.marker() == hashlib.sha256(manifest.encode()).hexdigest()

    # A real systemd oneshot ran `hf download`, then the check, whose report is in its journal.
    show = host.run(f"systemctl show -p Type,Result,ActiveState,ExecMainStatus {UNIT}").stdout
    assert dict(line.split("=", 1) for line in show.split()) == {
        "Type": "oneshot", "Result": "success", "ActiveState": "inactive", "ExecMainStatus": "0"}, show
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
    planner = [r for r in hub_lab.hub.log if r["client"] == hub_lab.lab.gateway]
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
    sources = host.run("cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null", check=False).stdout
    assert all(name in sources for name, _ in set(hub_lab.lab.proxy.upstreams) - upstreams)


def test_rerun_with_the_marker_changes_nothing(hub_lab_ok: HubLab) -> None:
    starts = hub_lab_ok.host.run(f"journalctl -u {UNIT} --no-pager -o cat | grep -c '^Starting ' || true").stdout
    result = hub_lab_ok.deploy()
    assert result.returncode == 0 and result.changed == 0, result.failure(4000)
    assert hub_lab_ok.host_requests() == []  # the host did not even list the repository
    assert hub_lab_ok.host.run(f"journalctl -u {UNIT} --no-pager -o cat | grep -c '^Starting ' || true"
                               ).stdout == starts
    assert hub_lab_ok.checksums() == expected_manifest()


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
