"""What the lab tests of the hub downloads share (tests/e2e/test_hub_download.py, test_modelscope_download.py).

One lab host and one fake hub (tests/fakehub.py) per module: the hub runs in this process on the lab bridge's
address (the only address of the controller a lab host reaches) and serves the tiny model's real directory as
the repository `lab/tiny-llama`. The deploy is the model stage alone (tests/e2e/model_only.py: planning, then
`model_files`, which starts the download unit itself), so vLLM is never installed; the hub CLI is, from the
offline wheelhouse. The planner sizes the model from the same hub (the name is in no catalog): the pyinfra runs get
the hub online (the suite sets VLLM_DEPLOY_HUB_OFFLINE) with a sizing cache of the module's own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hostlab import Lab, TestHost
from hostlab.deployrun import TINY_MODEL, WHEELHOUSE, RunResult, lab_host, run_pyinfra
from remote.model_check import MANIFEST, MARKER
from tasks.model_files import DOWNLOAD_UNIT, local_manifest
from tests.fakehub import Blob, FakeHub, Repo, repo_files

REPO = "lab/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
MODEL_DIR = "/srv/models/tiny-llama"
UNIT = f"{DOWNLOAD_UNIT}.service"
SHARD = "model.safetensors"
HUB_VENV = "/opt/vllm/hub-venv"
COMPLETE = "complete: every file has the repository's size and hash"
# The endpoint setting and the variables of the controller's environment the planner must not read instead.
ENDPOINT_SETTING = {"huggingface": "hf_endpoint", "modelscope": "modelscope_endpoint"}
CONTROLLER_ENDPOINT_VARS = {"huggingface": ("HF_ENDPOINT",), "modelscope": ("MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN")}
BRANCH = {"huggingface": "main", "modelscope": "master"}


def wheelhouse_version(distribution: str) -> str:
    """The version of `distribution` in the offline wheelhouse (what the hub venv must hold)."""
    return next(WHEELHOUSE.glob(f"{distribution}-*.whl")).name.split("-")[1]


def tiny_files() -> list[str]:
    return sorted(p.relative_to(TINY_MODEL).as_posix() for p in TINY_MODEL.rglob("*") if p.is_file())


def expected_manifest() -> str:
    return "\n".join(sorted(local_manifest(TINY_MODEL).splitlines())) + "\n"


class HubLab:
    """The module's shared state: the lab, its fake hub (serving REPO on `source`), the host and its inventory."""

    def __init__(self, lab: Lab, hub: FakeHub, host: TestHost, cache: Path, source: str) -> None:
        self.lab, self.hub, self.host, self.cache, self.source = lab, hub, host, cache, source
        self.entry = lab_host(host, model=REPO, model_source=source, model_local_path=None,
                              **{ENDPOINT_SETTING[source]: hub.url})

    @property
    def blobs(self) -> dict[str, Blob]:
        return (self.hub.hf if self.source == "huggingface" else self.hub.ms)[REPO].files

    def deploy(self) -> RunResult:
        """The model stage; the planner may reach the fake hub (and only it), with this module's sizing cache."""
        self.hub.log.clear()
        env: dict[str, str | None] = {"VLLM_DEPLOY_HUB_OFFLINE": None, "VLLM_DEPLOY_HUB_CACHE": str(self.cache)}
        env.update(dict.fromkeys(CONTROLLER_ENDPOINT_VARS[self.source]))
        return run_pyinfra([self.entry], "tests/e2e/model_only.py", timeout=900, env_overrides=env)

    def host_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.hub.log if r["client"] == self.host.ip]

    def planner_requests(self) -> list[dict[str, Any]]:
        """The planner's: it runs on the controller, so from the bridge's own address."""
        return [r for r in self.hub.log if r["client"] == self.lab.gateway]

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

    def manifest(self) -> str:
        return self.host.run(f"cat {MODEL_DIR}/{MANIFEST}").stdout

    def journal(self) -> str:
        """The download unit's journal since its latest start."""
        return self.host.run(f"journalctl -u {UNIT} --no-pager -o cat", check=False).stdout.rsplit(
            "Starting ", 1)[-1]

    def unit_starts(self) -> str:
        return self.host.run(f"journalctl -u {UNIT} --no-pager -o cat | grep -c '^Starting ' || true").stdout

    def unit_show(self) -> dict[str, str]:
        show = self.host.run(f"systemctl show -p Type,Result,ActiveState,ExecMainStatus {UNIT}").stdout
        return dict(line.split("=", 1) for line in show.split())

    def new_upstreams_outside_apt(self, before: set[Any]) -> set[Any]:
        """Upstreams the lab's egress proxy saw since `before` that are not the host's apt sources."""
        sources = self.host.run("cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null",
                                check=False).stdout
        return {up for up in set(self.lab.proxy.upstreams) - before if up[0] not in sources}

    def assert_recorded_copy(self) -> list[str]:
        """The host's copy is the repository's files byte for byte, with our manifest of them and the marker holding
        its digest, and the oneshot ended well; returns the files on the host besides the repository's and ours."""
        assert self.checksums() == expected_manifest()
        manifest = self.manifest()
        assert sorted(manifest.splitlines()) == expected_manifest().splitlines()
        assert self.marker() == hashlib.sha256(manifest.encode()).hexdigest()
        assert self.unit_show() == {
            "Type": "oneshot", "Result": "success", "ActiveState": "inactive", "ExecMainStatus": "0"}
        return sorted(set(self.files()) - set(tiny_files()) - {MANIFEST, MARKER})

    def assert_rerun_changes_nothing(self) -> None:
        """With the marker in place a deploy changes nothing, asks the hub nothing and starts no download."""
        starts = self.unit_starts()
        result = self.deploy()
        assert result.returncode == 0 and result.changed == 0, result.failure(4000)
        assert self.host_requests() == []  # the host did not even list the repository
        assert self.unit_starts() == starts
        assert self.checksums() == expected_manifest()


def hub_lab(lab: Lab, cache: Path, source: str, host_name: str) -> Iterator[HubLab]:
    """The module fixture's body: a fake hub serving the tiny model on `source`, a fresh host; both removed."""
    hub = FakeHub(bind=lab.gateway, cdn_host=None)
    repos = hub.hf if source == "huggingface" else hub.ms
    repos[REPO] = Repo(repo_files(TINY_MODEL), COMMIT, branches=(BRANCH[source],))
    host = lab.add_host(host_name)
    try:
        yield HubLab(lab, hub, host, cache, source)
    finally:
        host.kill()
        hub.stop()
