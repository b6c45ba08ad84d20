"""Install stage for the venv runtime: system packages, service user, vLLM in a virtualenv."""

from __future__ import annotations

import time
from collections.abc import Sequence

import gevent
from gevent.event import Event
from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import OperationError
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, pip, python

from plan.host import HostPlan, HostSetup
from plan.packages import pip_pin, pip_satisfied
from plan.quoting import sh, sh_join
from tasks import remote
from tasks.apt_lists import update_once
from tasks.service_account import finish_wheelhouse, service_account, start_wheelhouse

PROGRESS_SECONDS = 10.0
# The line the install command writes to pip's log when pip is done and the bytecode compile starts.
COMPILING = "vllm-deploy: compiling bytecode"


def pip_install_args(setup: HostSetup) -> str:
    """Offline wheelhouse beats a mirror preset; neither keeps pip's own default index.

    Shell-quoted: pyinfra pastes extra_install_args into the root command line as they are.
    """
    if setup.install.wheelhouse_remote:
        return sh_join(["--no-index", "--find-links", setup.install.wheelhouse_remote])
    if setup.install.index_url:
        return sh_join(["--index-url", setup.install.index_url])
    return ""


def pip_install(setup: HostSetup, packages: Sequence[str], remove: Sequence[str] = ()) -> None:
    """`pip install` into the venv, its progress logged every PROGRESS_SECONDS: the install of vLLM is minutes of
    pip's silence otherwise (~150 packages). Progress is read beside pip on a second SSH channel: the packages it
    resolved (its log), then how many of them are in the venv (their .dist-info directories). Then `remove` is
    uninstalled in the same command (the packages that break this build; pip skips one that is not there).

    pip compiles the ~22,000 installed modules to bytecode one at a time (77 of 106 s on a 2-core lab host), so it
    runs with --no-compile and `compileall -j 0` compiles them on every core (46 s there; far less on a GPU
    server's dozens of cores). The service account cannot write the root-owned venv, so without bytecode each
    start would compile vLLM again. Like pip, it ignores the files that only a newer Python parses (torch ships
    some); Python compiles any file it missed at import."""
    run = remote.bound()
    name = host.name
    log = f"{setup.prefix}/pip-install.log"
    site = f"{sh(setup.venv)}/lib/python3*/site-packages"
    extra = pip_install_args(setup)
    pip_argv = f"{sh(setup.venv + '/bin/pip')} install {extra + ' ' if extra else ''}{sh_join(packages)}"
    command = f"PYTHONUNBUFFERED=1 {pip_argv} --no-compile --progress-bar off > {sh(log)} 2>&1"
    if remove:
        command += f" && {sh(setup.venv + '/bin/pip')} uninstall -y {sh_join(remove)} >> {sh(log)} 2>&1"
    command += (f" && echo {sh(COMPILING)} >> {sh(log)} && {{ {sh(setup.venv + '/bin/python')} -m compileall -q -j 0 "
                f"{site} >> {sh(log)} 2>&1 || true; }}")
    count = f"ls -d {site}/*.dist-info 2>/dev/null | wc -l"
    _, before = run(count)
    installed_before = _int(before.stdout_lines)
    finished = Event()
    started = time.monotonic()

    def report() -> None:
        while not finished.wait(PROGRESS_SECONDS):
            _, output = run(f"grep -cE '^(Collecting|Processing) ' {sh(log)}; "
                            f"grep -m1 '^Installing collected packages:' {sh(log)}; "
                            f"grep -c '^{COMPILING}$' {sh(log)}; {count}")
            lines = output.stdout_lines
            seen = _int(lines[:1])
            installing = next((line for line in lines if line.startswith("Installing collected packages:")), None)
            elapsed = time.monotonic() - started
            if _int(lines[-2:-1]):
                logger.info(f"[{name}] pip: installed; compiling bytecode on every core ({elapsed:.0f}s)")
            elif installing is None:
                logger.info(f"[{name}] pip: resolving, {seen} requirement(s) collected ({elapsed:.0f}s)")
            else:
                total = len(installing.partition(":")[2].split(","))
                done = max(0, _int(lines[-1:]) - installed_before)
                logger.info(f"[{name}] pip: installing, {min(done, total)}/{total} package(s) in the "
                            f"venv ({elapsed:.0f}s)")

    reporter = gevent.spawn(report)
    try:
        ok, _ = run(command)
    finally:
        finished.set()
        reporter.join(timeout=30)
    if not ok:
        _, tail = run(f"tail -n 30 {sh(log)}")
        raise OperationError(f"pip install {' '.join(packages)} failed; the end of {log}:\n"
                             + "\n".join(tail.stdout_lines))


def _int(lines: Sequence[str]) -> int:
    text = (lines[0] if lines else "").strip()
    return int(text) if text.isdigit() else 0


@deploy("Install vLLM (venv runtime)")
def install_venv(plan: HostPlan) -> list[OperationMeta]:
    """Returns the operations whose change means the service must restart."""
    setup = plan.setup
    start_wheelhouse(setup, background=True)  # its bytes travel while apt and the service account run
    apt.packages(
        name="System packages for a Python virtualenv",
        packages=list(setup.install.apt_packages),
        no_recommends=True,
        **update_once(),
    )
    service_account(setup, plan.facts.install.account if plan.facts.install else None)
    finish_wheelhouse(setup)
    pip.venv(name="vLLM virtualenv", path=setup.venv, python="python3")
    installed = plan.facts.install.venv_packages if plan.facts.install else None
    wanted = (setup.install.package, *setup.install.extra_packages)
    if installed is not None and pip_satisfied(installed, wanted, setup.install.remove_packages):
        return []  # what pip would find itself, asked once at planning instead of once per pip operation
    if installed is not None and all(pip_pin(spec) for spec in wanted):
        # Known to be needed (the check above): installed with progress.
        return [python.call(name=f"Install {setup.install.package}", function=pip_install, setup=setup,
                            packages=wanted, remove=setup.install.remove_packages)]
    # A requirement pip must interpret, or no facts: pyinfra's own check decides.
    changes = [pip.packages(name=f"Install {setup.install.package}", packages=list(wanted),
                            virtualenv=setup.venv, extra_install_args=pip_install_args(setup) or None)]
    if setup.install.remove_packages:
        changes.append(pip.packages(
            name="Remove packages that break this build",
            packages=list(setup.install.remove_packages),
            present=False,
            virtualenv=setup.venv,
        ))
    return changes
