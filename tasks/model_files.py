"""Model stage: put the weights in the plan's model directory, verified.

A local source is synced file by file (a re-run resumes: files whose checksum
already matches are skipped), then checked against a SHA-256 manifest; a marker
holding the manifest's digest makes a complete copy a no-op next time.
"""

from __future__ import annotations

import hashlib
import os
from io import BytesIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, server

from plan.service import ServicePlan

MANIFEST = ".vllm-deploy-manifest.sha256"
MARKER = ".vllm-deploy-complete"


def local_manifest(root: str | Path) -> str:
    """`sha256sum` format manifest of every file under root (sorted, our own files excluded)."""
    root = Path(root)
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in (MANIFEST, MARKER):
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        lines.append(f"{digest.hexdigest()}  {rel}")
    return "\n".join(lines) + "\n"


@deploy("Model files")
def model_files(plan: ServicePlan) -> list[OperationMeta]:
    """Returns the operations whose change means the service must restart."""
    model = plan.model
    if model.source != "local":
        return download(plan)
    manifest = local_manifest(model.local_path)
    digest = hashlib.sha256(manifest.encode()).hexdigest()
    marker = host.get_fact(FileContents, path=f"{model.host_dir}/{MARKER}")
    if marker and marker[0].strip() == digest:
        return []
    files.sync(
        name=f"Sync model {model.local_path} -> {model.host_dir}",
        src=model.local_path,
        dest=model.host_dir,
        user="root",
        group="root",
        mode="644",
        dir_mode="755",
        exclude=[MANIFEST, MARKER],
    )
    manifest_file = os.path.join(model.host_dir, MANIFEST)
    files.put(name="Model manifest", src=BytesIO(manifest.encode()), dest=manifest_file, mode="644")
    return [server.shell(
        name="Verify model checksums",
        commands=[
            f"cd {model.host_dir} && rm -f {MARKER} && sha256sum --quiet --strict -c {MANIFEST} "
            f"&& echo {digest} > {MARKER}"
        ],
    )]


def download(plan: ServicePlan) -> list[OperationMeta]:
    """Render and run the hub download on the host (ModelScope or a Hugging Face endpoint)."""
    model = plan.model
    marker = host.get_fact(FileContents, path=f"{model.host_dir}/{MARKER}")
    if marker:
        return []
    revision = f" --revision {model.revision}" if model.revision else ""
    if model.source == "modelscope":
        command = f"{plan.venv}/bin/modelscope download --model {model.name} --local_dir {model.host_dir}{revision}"
        package = "modelscope"
    else:
        command = f"{plan.venv}/bin/hf download {model.name} --local-dir {model.host_dir}{revision}"
        package = "huggingface_hub[cli]"
    env = f"HF_ENDPOINT={model.hf_endpoint} " if model.hf_endpoint else ""
    return [server.shell(
        name=f"Download {model.name} from {model.source}",
        commands=[
            f"{plan.venv}/bin/pip install -q '{package}'",
            f"mkdir -p {model.host_dir} && {env}{command}",
            f"test -f {model.host_dir}/config.json && date -u +%FT%TZ > {model.host_dir}/{MARKER}",
        ],
    )]
