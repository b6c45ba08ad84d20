"""The deployment's API key on the controller: read, or generated once and kept outside the repository."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from plan.schema import BY_NAME
from plan.settings import Settings
from plan.validators import Invalid


def key_file(settings: Settings) -> Path:
    """Where the controller keeps the key: vllm_api_key_file, or under ~/.config/vllm-deploy/api-keys/."""
    if settings.vllm_api_key_file:
        return Path(settings.vllm_api_key_file).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "vllm-deploy" / "api-keys" / f"{settings.vllm_deployment}.key"


def resolve_api_key(settings: Settings) -> str | None:
    """The key clients must send, or None when keys are off.

    Generated on first use with O_EXCL, so hosts planned in parallel all read the one
    key that won; the file is 0600 in a 0700 directory.
    """
    if not settings.vllm_require_api_key:
        return None
    if settings.vllm_api_key:
        return settings.vllm_api_key
    path = key_file(settings)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(f"sk-vllm-{secrets.token_urlsafe(32)}\n")
    key = path.read_text().strip()
    if not key:
        raise ValueError(f"vllm_api_key_file: {path} is empty; delete it to have a key generated, or write one")
    try:
        # A key written by hand is held to what vllm_api_key accepts: it lands in env and header files.
        return BY_NAME["vllm_api_key"].check(key)
    except Invalid:
        # The message must not echo the key.
        raise ValueError(f"{path}: the key in it must be one line of 16-256 characters of letters, digits and "
                         "._~+/=- (it travels in an HTTP header)") from None
