"""Preflight: everything that would make a host fail later, found from its facts before any change.

Pure like the rest of the plan. Each error names the setting or thing to fix and how, so one run
lists every problem of every host; warnings are printed with the plan and do not stop it. What
the driver stage will repair (a missing or old driver, nouveau) is an error only when that stage
is switched off.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from facts.commands import DOCKER_ROOT
from facts.model import HostFacts
from plan.driver import DriverPlan, HostGpu, driver_floor, host_gpus, min_compute_capability, plan_driver
from plan.settings import Settings

SUPPORTED_OS = {"ubuntu": ("22.04", "24.04"), "debian": ("12",)}
# An estimate, not a measurement: the CUDA vLLM image carries CUDA, torch and FlashInfer; 25 GiB covers it
# unpacked plus the layers of the next tag while the old one is still there. A CPU image (no CUDA) is smaller.
DOCKER_IMAGE_BYTES = 25 * 2**30
# Room for the model beyond its weights: a partial download's temporary files, the marker and manifest.
MODEL_DISK_MARGIN = 1.05
# /dev/shm below this warns when several GPU processes talk: NCCL's SHM transport (used between GPUs without
# P2P, e.g. consumer cards with NCCL_P2P_DISABLE=1) and vLLM's shared-memory broadcast queue live there, and
# NCCL's own troubleshooting guide has containers run with --shm-size=1g because docker's 64 MiB default fails.
MIN_SHM_BYTES = 1 << 30


@dataclass(frozen=True)
class PreflightResult:
    """Errors as (field, message) pairs, each with its fix; warnings as sentences."""

    errors: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def message(self, host: str) -> str:
        """All errors at once, the way SettingsError lists bad settings."""
        lines = [f"  {name}: {text}" for name, text in self.errors]
        return f"preflight failed on {host} (nothing was changed):\n" + "\n".join(lines)


@dataclass(frozen=True)
class HostChecks:
    """What preflight reads per host, computed once for all its instances: the GPUs and the driver plan."""

    gpus: tuple[HostGpu, ...]
    driver: DriverPlan

    def for_gpus(self, chosen: tuple[int, ...] | None) -> tuple[HostGpu, ...]:
        """The GPUs one instance sees (CUDA_VISIBLE_DEVICES), in its order; all of them before a driver answers."""
        if chosen is None or any(g.index is None for g in self.gpus):
            return self.gpus
        by_index = {g.index: g for g in self.gpus}
        return tuple(by_index[i] for i in chosen if i in by_index)


def host_checks(settings: Settings, facts: HostFacts, device: str) -> HostChecks:
    """The host-level part of preflight (OS facts, GPUs, driver), once per host."""
    gpus = host_gpus(facts)
    return HostChecks(tuple(gpus), plan_driver(settings, facts, device, gpus))


def _gib(value: float) -> str:
    return f"{value / 2**30:.1f} GiB"


def _check_os(settings: Settings, facts: HostFacts, errors: list, warnings: list) -> None:
    release = facts.os
    if release and release.version_id in SUPPORTED_OS.get(release.id, ()):
        return
    name = (release.pretty_name or f"{release.id} {release.version_id}") if release else "an unknown OS"
    text = f"{name} is not supported (Ubuntu 22.04/24.04, Debian 12)"
    if settings.vllm_allow_unsupported_os:
        warnings.append(f"{text}; going on because vllm_allow_unsupported_os is True")
    else:
        errors.append(("os", f"{text}; use a supported release, or set vllm_allow_unsupported_os = True in "
                       "group_data to try anyway"))


def _check_gpus(settings: Settings, gpus: tuple[HostGpu, ...], errors: list, warnings: list) -> None:
    if not gpus:
        errors.append(("gpu", "vllm_device is 'cuda' but neither nvidia-smi nor lspci shows an NVIDIA GPU; check "
                       "the hardware (or the VM's passthrough), or set vllm_device = 'cpu'"))
        return
    need = min_compute_capability(settings.vllm_version)
    if gpus[0].source == "lspci" and gpus[0].spec:
        warnings.append(f"no NVIDIA driver answers yet: sized from the catalog's {gpus[0].spec.memory_gib} GiB per "
                        f"{gpus[0].spec.name}; the next run sizes from the memory nvidia-smi measures")
    for gpu in gpus:
        if gpu.compute_capability is None:
            warnings.append(f"compute capability of {gpu.name} is unknown until its driver answers; vLLM "
                            f"{settings.vllm_version} needs {need[0]}.{need[1]} or higher")
        elif gpu.compute_capability < need:
            cc = ".".join(map(str, gpu.compute_capability))
            errors.append(("gpu", f"{gpu.name} has compute capability {cc}; vLLM {settings.vllm_version} needs "
                           f"{need[0]}.{need[1]} or higher: use newer GPUs, or vllm_device = 'cpu'"))
            return


def _check_driver(settings: Settings, facts: HostFacts, driver: DriverPlan, errors: list, warnings: list) -> None:
    cuda, floor = driver_floor(settings.vllm_version)
    floor_text = ".".join(str(p) if i == 0 else f"{p:02d}" for i, p in enumerate(floor))
    errors += driver.errors
    if settings.nvidia_driver_manage:
        if int(settings.nvidia_driver_branch) < floor[0]:
            errors.append(("nvidia_driver_branch", f"branch {settings.nvidia_driver_branch} cannot run vLLM "
                           f"{settings.vllm_version}, built for CUDA {cuda}: it needs driver {floor_text} or newer; "
                           f"set a branch >= {floor[0]}"))
        if driver.installs and driver.secure_boot:
            warnings.append("Secure Boot is on: the DKMS-built NVIDIA module loads only when signed with a key the "
                            "firmware trusts (Ubuntu signs it with its MOK, enrolled once at the console after "
                            "`mokutil --import`); otherwise the nvidia-smi check after the reboot fails")
        if driver.installs and not driver.reboot_allowed:
            warnings.append("nvidia_driver_reboot is False: the host stops after the driver install until it is "
                            "rebooted by hand")
        return
    state = facts.driver_state
    off = "or set nvidia_driver_manage = True to let the deploy do it"
    if state == "working" and facts.reboot_pending or state == "mismatch":
        errors.append(("driver", "the loaded NVIDIA kernel module differs from the installed driver: reboot the "
                       f"host, {off}"))
    elif state == "working":
        version = tuple(int(p) for p in facts.driver_version.split(".")[:3] if p.isdigit())
        if version < floor:
            errors.append(("driver", f"driver {facts.driver_version} (CUDA {facts.cuda_version or '?'}) is older "
                           f"than {floor_text}, the oldest that runs vLLM {settings.vllm_version}'s CUDA {cuda} "
                           f"build: upgrade it to branch {settings.nvidia_driver_branch}, {off}"))
    else:
        errors.append(("driver", f"no working NVIDIA driver ({state.replace('_', ' ')}): install branch "
                       f"{settings.nvidia_driver_branch} or newer, {off}"))
        if facts.modules.nouveau:
            errors.append(("nouveau", "the nouveau module holds the GPUs: blacklist it "
                           "(/etc/modprobe.d, update-initramfs -u) and reboot, " + off))


def _check_disk(settings: Settings, facts: HostFacts, runtime: str, model_bytes: int | None, model_present: bool,
                errors: list, warnings: list) -> None:
    need_model = int(model_bytes * MODEL_DISK_MARGIN) if model_bytes and not model_present else 0
    free_model = facts.disk_free(settings.model_dir)
    if free_model is not None and need_model and free_model < need_model:
        errors.append(("model_dir", f"{_gib(free_model)} free at {settings.model_dir}, the model needs "
                       f"{_gib(need_model)}; free space or point model_dir at a larger disk"))
    if runtime != "docker":
        return
    free_docker = facts.disk_free(DOCKER_ROOT)
    if free_docker is None:
        return
    same_disk = {d.path for k, d in facts.disks.items() if k in (DOCKER_ROOT, settings.model_dir)}
    need = DOCKER_IMAGE_BYTES + (need_model if len(same_disk) == 1 else 0)
    if free_docker >= need:
        return
    besides = " besides the model on the same disk" if need > DOCKER_IMAGE_BYTES else ""
    text = (f"{_gib(free_docker)} free for docker images at {DOCKER_ROOT}; the vLLM image needs about "
            f"{_gib(DOCKER_IMAGE_BYTES)}{besides}")
    if facts.docker.status == "ok":
        warnings.append(f"{text} (enough if the image is already pulled)")
    else:
        errors.append(("docker", f"{text}; free space there or move docker's data-root to a larger disk"))


def preflight(settings: Settings, facts: HostFacts, device: str, runtime: str, ports: Iterable[int], *,
              own_ports: Iterable[int] = (), world_size: int = 1, model_bytes: int | None = None,
              model_present: bool = False, checks: HostChecks | None = None,
              gpus: tuple[int, ...] | None = None) -> PreflightResult:
    """Check one host before any change.

    `ports` are those the host will listen on, `own_ports` those this deployment's running units already
    hold (a re-run), `world_size` the GPUs one instance spans (tensor x pipeline), `model_bytes` the
    weights still to be put on the host unless `model_present`. `checks` are the host's GPUs and driver
    plan, computed once per host (from `facts` when not given), `gpus` the instance's share of them.
    """
    errors: list[tuple[str, str]] = []
    warnings: list[str] = []
    _check_os(settings, facts, errors, warnings)
    if device == "cuda":
        if checks is None:
            checks = host_checks(settings, facts, device)
            gpus = None  # `facts` are already the instance's view
        _check_gpus(settings, checks.for_gpus(gpus), errors, warnings)
        _check_driver(settings, facts, checks.driver, errors, warnings)
        shm = facts.shm_bytes
        if world_size > 1 and shm is not None and shm < MIN_SHM_BYTES:
            via = "the container shares it (--ipc=host)" if runtime == "docker" else "the service uses it"
            warnings.append(f"/dev/shm is {_gib(shm)} and {via}; {world_size} GPU processes need at least "
                            f"{_gib(MIN_SHM_BYTES)} for NCCL and vLLM's broadcast queue: remount it larger "
                            "(e.g. size=50% in /etc/fstab)")
    _check_disk(settings, facts, runtime, model_bytes, model_present, errors, warnings)
    held = set(own_ports)
    for port in sorted(set(ports)):
        if port not in held and facts.port_in_use(port):
            errors.append(("vllm_port", f"{port} is already in use by another program; choose a free port or stop "
                           "that program"))
    return PreflightResult(tuple(errors), tuple(warnings))
