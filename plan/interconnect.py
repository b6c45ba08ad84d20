"""Interconnect doctor: may the GPUs of one node talk peer to peer, and what vLLM and NCCL must be told.

vLLM decides custom all-reduce at start-up (vllm/distributed/device_communicators/custom_all_reduce.py):
it is off for a TP group size outside 2, 4, 6, 8, 16, off for more than two GPUs unless NVML reports NVLink
between every pair, and off when its real P2P probe (`gpu_p2p_access_check`, cached in
`$VLLM_CACHE_ROOT/gpu_p2p_access_cache_for_<ids>.json`) fails. NCCL, separately, uses PCIe P2P whenever the
driver reports it, and hangs or crawls when PCIe Access Control Services redirect those transfers to the
root complex, or on GeForce cards whose driver does not really support PCIe P2P (vllm #14449). This module
predicts the same verdicts from `nvidia-smi topo -m`, the bridges' `ACSCtl` lines and the GPU catalog, so
the plan states them, with the reason, before the start instead of after a hang. Pure: no pyinfra import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from facts.model import HostFacts, PciAcs, Topology

# The TP group sizes vLLM's custom all-reduce supports (CustomAllreduce._SUPPORTED_WORLD_SIZES).
CUSTOM_ALL_REDUCE_SIZES = (2, 4, 6, 8, 16)


@dataclass(frozen=True)
class PathVerdict:
    """Whether PCIe/NVLink peer-to-peer between this node's GPUs works, as vLLM's probe would find it.

    `p2p` None: unknown (one GPU, or no topology); `nvlink`: every pair bonded by NVLink; `nccl_unsafe`:
    NCCL would try a P2P path that hangs or crawls (ACS redirecting, GeForce PCIe P2P).
    """

    p2p: bool | None
    nvlink: bool = False
    nccl_unsafe: bool = False
    reason: str = ""


@dataclass(frozen=True)
class InterconnectPlan:
    """The doctor's decisions for one node: flags, environment, and a sentence per decision."""

    path: PathVerdict
    tensor_parallel_size: int
    disable_custom_all_reduce: bool = False
    nccl_p2p_disable: bool = False
    reasons: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    @property
    def args(self) -> tuple[str, ...]:
        return ("--disable-custom-all-reduce",) if self.disable_custom_all_reduce else ()


def _gpu_catalog_p2p(name: str | None) -> bool | None:
    """The catalog's word on PCIe P2P for this card (GeForce: off in the driver), None when unknown."""
    if not name:
        return None
    from sizing.catalog import CatalogError, find_gpu

    try:
        spec = find_gpu(name)
    except CatalogError:
        return None
    return spec.p2p or spec.nvlink


def path_verdict(topology: Topology | None, gpu_name: str | None, acs: PciAcs | None = None) -> PathVerdict:
    """P2P between the node's GPUs from the topology matrix, the bridges' ACS and the card's catalog entry."""
    if topology is None or topology.status != "ok" or len(topology.gpus) < 2:
        return PathVerdict(p2p=None, reason="one GPU or no `nvidia-smi topo -m` matrix: no peer-to-peer to judge")
    links = sorted({topology.links.get((i, j), "") for i in range(len(topology.gpus))
                    for j in range(len(topology.gpus)) if i < j})
    shown = "/".join(link for link in links if link)
    if topology.all_nvlink:
        extra = ""
        if acs is not None and acs.redirecting:
            extra = f"; ACS on {len(acs.redirecting)} PCIe bridges does not touch NVLink traffic"
        return PathVerdict(p2p=True, nvlink=True,
                           reason=f"NVLink between every GPU pair ({shown} in `nvidia-smi topo -m`){extra}")
    catalog = _gpu_catalog_p2p(gpu_name)
    if catalog is False:
        return PathVerdict(p2p=False, nccl_unsafe=True,
                           reason=f"{gpu_name}: the driver does not enable PCIe peer-to-peer on these cards "
                                  f"(GPUs linked by {shown}, no NVLink); NCCL's P2P transport hangs on them "
                                  "(vllm #14449)")
    if acs is not None and acs.redirecting:
        slots = ", ".join(b.slot for b in acs.redirecting[:4]) + ("..." if len(acs.redirecting) > 4 else "")
        return PathVerdict(p2p=False, nccl_unsafe=True,
                           reason=f"PCIe ACS redirects peer-to-peer requests to the root complex on "
                                  f"{len(acs.redirecting)} bridges ({slots}): GPU P2P over PCIe hangs or crawls "
                                  "(NCCL's troubleshooting guide: disable ACS in the BIOS, or keep P2P off)")
    if topology.p2p:
        return PathVerdict(p2p=True, reason=f"GPUs behind PCIe switches ({shown}), no ACS redirect: PCIe P2P works")
    return PathVerdict(p2p=False, reason=f"GPUs linked through the CPU ({shown} in `nvidia-smi topo -m`): no "
                                         "direct P2P path; NCCL picks shared memory by itself")


def diagnose(path: PathVerdict, tensor_parallel_size: int, device: str = "cuda") -> InterconnectPlan:
    """What to tell vLLM and NCCL for a TP group of `tensor_parallel_size` GPUs on one node, and why.

    `--disable-custom-all-reduce` whenever vLLM would turn it off itself (said explicitly, so its P2P
    probe is skipped and the plan shows why); `NCCL_P2P_DISABLE=1` only where NCCL's P2P would hang.
    """
    tp = tensor_parallel_size
    if device != "cuda" or tp <= 1:
        return InterconnectPlan(path=path, tensor_parallel_size=tp)
    reasons: list[str] = []
    disable = False
    if tp not in CUSTOM_ALL_REDUCE_SIZES:
        disable = True
        reasons.append(f"--disable-custom-all-reduce: vLLM's custom all-reduce supports TP "
                       f"{', '.join(map(str, CUSTOM_ALL_REDUCE_SIZES))}, not {tp}")
    elif path.p2p is False:
        disable = True
        reasons.append(f"--disable-custom-all-reduce: {path.reason}")
    elif tp > 2 and not path.nvlink and path.p2p is not None:
        disable = True
        reasons.append(f"--disable-custom-all-reduce: vLLM keeps custom all-reduce to two GPUs without NVLink "
                       f"(TP {tp}); {path.reason}")
    elif path.p2p:
        reasons.append(f"custom all-reduce on: {path.reason}")
    env: dict[str, str] = {}
    if path.nccl_unsafe:
        env["NCCL_P2P_DISABLE"] = "1"
        reasons.append("NCCL_P2P_DISABLE=1: NCCL carries TP traffic through shared memory instead of the broken "
                       "P2P path")
    return InterconnectPlan(path=path, tensor_parallel_size=tp, disable_custom_all_reduce=disable,
                            nccl_p2p_disable=bool(env), reasons=tuple(reasons), env=env)


def host_path_verdict(facts: HostFacts, acs: PciAcs | None = None) -> PathVerdict:
    """`path_verdict` from a host's facts (facts.model.HostFacts); ACS from `acs` or `facts.pci_acs`."""
    gpus = facts.gpus
    acs = acs if acs is not None else facts.pci_acs
    return path_verdict(facts.topology, gpus[0].name if gpus else None, acs)
