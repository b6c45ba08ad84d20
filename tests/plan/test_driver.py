"""The driver plan on the recorded servers and hand-built facts: what is installed, when it reboots."""

from __future__ import annotations

from dataclasses import replace

import pytest

from facts.model import OsRelease, PciScan
from plan.driver import (
    DriverPlan,
    check_driver_output,
    driver_floor,
    host_gpus,
    min_compute_capability,
    plan_driver,
    vllm_cuda,
)
from plan.settings import load_settings
from tests.plan.test_preflight import PASCAL_PCI, VOLTA_PCI, recorded

DEFAULT = load_settings({})


@pytest.mark.parametrize(("profile", "state", "action"), [
    ("2080ti-x4-ubuntu2404", "nodriver", "install"),
    ("2080ti-x4-ubuntu2404", "olddriver", "upgrade"),
    ("2080ti-x4-ubuntu2404", "converged", "keep"),
    ("2080ti-x4-ubuntu2404", "rebootpending", "reboot"),
    ("4090-x2-ubuntu2204", "olddriver", "upgrade"),
    ("t4-x1-ubuntu2204", "olddriver", "upgrade"),
    ("h100-x1-ubuntu2404", "converged", "keep"),
    ("debian12-cpu", "converged", "none"),
])
def test_action_follows_the_recorded_state(profile: str, state: str, action: str) -> None:
    facts = recorded(profile, state)
    device = "cuda" if facts.gpu_count else "cpu"
    driver = plan_driver(DEFAULT, facts, device)
    assert driver.action == action
    assert driver.reboot == (action in ("install", "upgrade", "reboot"))
    assert driver.errors == ()


@pytest.mark.parametrize("profile", ["t4-x1-ubuntu2204", "h100-x1-ubuntu2404", "a100sxm-x8-ubuntu2204",
                                     "2080ti-x4-ubuntu2404"])
def test_turing_and_newer_get_open_modules_from_lspci_alone(profile: str) -> None:
    driver = plan_driver(DEFAULT, recorded(profile, "nodriver"), "cuda")
    assert driver.open_modules is True
    assert "nvidia-driver-570-server-open" in driver.packages
    assert driver.expect_gpus == len(recorded(profile, "nodriver").pci_gpus)


def test_nvswitch_systems_get_the_fabric_manager_of_the_same_branch() -> None:
    driver = plan_driver(DEFAULT, recorded("a100sxm-x8-ubuntu2204", "olddriver"), "cuda")
    assert driver.packages == ("linux-headers-5.15.0-86-generic", "nvidia-driver-570-server-open",
                               "nvidia-fabricmanager-570")
    assert driver.services == ("nvidia-persistenced.service", "nvidia-fabricmanager.service")


def test_volta_gets_the_proprietary_modules_and_open_is_refused() -> None:
    volta = replace(recorded("h100-x1-ubuntu2404", "nodriver"), pci=VOLTA_PCI)
    assert [g.architecture for g in host_gpus(volta)] == ["volta"]
    driver = plan_driver(DEFAULT, volta, "cuda")
    assert driver.open_modules is False and "nvidia-driver-570-server" in driver.packages
    forced = plan_driver(load_settings({"nvidia_driver_flavor": "open"}), volta, "cuda")
    assert forced.errors and forced.errors[0][0] == "nvidia_driver_flavor"


def test_unknown_card_is_named_by_its_chip() -> None:
    pascal = replace(recorded("h100-x1-ubuntu2404", "nodriver"), pci=PASCAL_PCI)
    (gpu,) = host_gpus(pascal)
    assert (gpu.architecture, gpu.compute_capability, gpu.spec) == ("pascal", (6, 0), None)
    assert "15f8" in gpu.name


def test_debian_12_uses_nvidias_cuda_repository() -> None:
    debian = OsRelease(id="debian", version_id="12", codename="bookworm", pretty_name="Debian GNU/Linux 12")
    driver = plan_driver(DEFAULT, replace(recorded("h100-x1-ubuntu2404", "nodriver"), os=debian), "cuda")
    assert driver.keyring_url == ("https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/"
                                  "cuda-keyring_1.1-1_all.deb")
    assert driver.packages == ("linux-headers-6.8.0-60-generic", "nvidia-open-570")


def test_unsupported_os_or_unknown_kernel_cannot_install() -> None:
    facts = recorded("t4-x1-ubuntu2204", "nodriver")
    rocky = plan_driver(DEFAULT, replace(facts, os=OsRelease("rocky", "9.4", None, "Rocky Linux 9.4")), "cuda")
    assert rocky.errors[0][0] == "nvidia_driver_manage" and "Rocky Linux 9.4" in rocky.errors[0][1]
    assert plan_driver(DEFAULT, replace(facts, kernel_release=None), "cuda").errors[0][0] == "nvidia_driver_manage"


def test_newer_working_driver_is_kept_and_an_older_pin_never_downgrades() -> None:
    h100 = recorded("h100-x1-ubuntu2404")
    assert plan_driver(load_settings({"nvidia_driver_branch": "570"}), h100, "cuda").action == "keep"
    assert plan_driver(load_settings({"nvidia_driver_branch": "580"}), h100, "cuda").action == "upgrade"
    assert plan_driver(load_settings({"nvidia_driver_manage": False}), recorded("t4-x1-ubuntu2204", "nodriver"),
                       "cuda").action == "none"


def test_version_table() -> None:
    assert vllm_cuda("0.32.0") == "12.9" and vllm_cuda("0.9.2") == "12.8" and vllm_cuda("0.6.3") == "12.1"
    assert driver_floor("0.32.0") == ("12.9", (525, 60, 13))
    assert min_compute_capability("0.32.0") == (7, 0)


def test_check_after_the_reboot() -> None:
    driver = DriverPlan("install", "", expect_gpus=2, expect_branch="570", secure_boot=True)
    good = ["0, NVIDIA GeForce RTX 4090, 570.172.08", "1, NVIDIA GeForce RTX 4090, 570.172.08"]
    assert check_driver_output(driver, good) is None
    assert "1 GPU(s), lspci showed 2" in check_driver_output(driver, good[:1])
    assert "550.144.03" in check_driver_output(driver, [g.replace("570.172.08", "550.144.03") for g in good])
    failed = check_driver_output(driver, ["NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
                                          "driver."])
    assert "couldn't communicate" in failed and "Secure Boot" in failed


def test_summary_says_what_happens() -> None:
    text = plan_driver(DEFAULT, recorded("2080ti-x4-ubuntu2404", "nodriver"), "cuda").summary()
    assert "nvidia-driver-570-server-open" in text and "reboot and continue" in text
    nothing = plan_driver(DEFAULT, replace(recorded("2080ti-x4-ubuntu2404", "nodriver"), pci=PciScan(status="ok")),
                          "cuda")
    assert nothing.action == "none", "no card on the bus: nothing to install (preflight reports it)"
