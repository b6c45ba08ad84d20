"""NVIDIA driver stage: apply a DriverPlan; a host whose driver is already right gets no operation at all.

The plan decided everything (packages, flavour, reboot); this only turns it into apt, modprobe.d,
initramfs, systemd and reboot operations, then proves the result with nvidia-smi before vLLM is
installed on top of it.
"""

from __future__ import annotations

from io import StringIO

from pyinfra.api import deploy
from pyinfra.api.exceptions import OperationError
from pyinfra.operations import apt, files, python, server, systemd

from facts.commands import DRIVER_CHECK
from plan.driver import DriverPlan, check_driver_output
from tasks import remote
from tasks.apt_lists import refreshed


def check_driver(driver: DriverPlan) -> None:
    """Fail the host with what to look at when nvidia-smi does not show the planned driver on every GPU."""
    _, output = remote.run(DRIVER_CHECK)
    problem = check_driver_output(driver, output.stdout_lines + output.stderr_lines)
    if problem:
        raise OperationError(problem)


def stop_for_reboot(driver: DriverPlan) -> None:
    raise OperationError(f"NVIDIA driver stage: a reboot is needed ({driver.reason}) and nvidia_driver_reboot is "
                         "False; reboot the host, then deploy again")


@deploy("NVIDIA driver")
def nvidia_driver(driver: DriverPlan) -> None:
    """Install or upgrade the pinned branch, blacklist nouveau, reboot when needed, then check with nvidia-smi."""
    if not driver.changes:
        return
    if driver.installs:
        if driver.keyring_url:
            apt.deb(name="NVIDIA CUDA repository keyring", src=driver.keyring_url)
        apt.packages(
            name=f"NVIDIA driver {driver.branch} and kernel headers",
            packages=list(driver.packages),
            update=True,
            cache_time=3600,
            no_recommends=True,
        )
        refreshed()
        blacklist = files.put(
            name="Blacklist nouveau",
            src=StringIO(driver.blacklist),
            dest=driver.blacklist_file,
            user="root",
            group="root",
            mode="644",
        )
        server.shell(
            name="Rebuild the initramfs without nouveau",
            commands=["update-initramfs -u"],
            _if=blacklist.did_change,
        )
        for service in driver.services:
            # Enabled now, started by the boot that loads the new module.
            systemd.service(name=f"{service} enabled", service=service, running=None, enabled=True)
    if not driver.reboot_allowed:
        python.call(name="Reboot needed", function=stop_for_reboot, driver=driver)
        return
    server.reboot(
        name="Reboot to load the NVIDIA kernel module",
        delay=driver.reboot_delay,
        reboot_timeout=driver.reboot_timeout,
    )
    python.call(name="nvidia-smi sees every GPU", function=check_driver, driver=driver)
