#!/usr/bin/env python3
"""vLLM engine watchdog: restarts an instance whose engine stopped producing tokens.

vLLM can answer /health with 200 while its engine core is wedged (vllm#39863): nothing decodes,
yet every check that only asks "is the server up" passes. This asks each instance for one token
with a deadline, every interval, one thread per instance; after `misses` probes in a row got no
token it logs why to stdout (the journal) and runs the instance's restart commands (SIGKILL to the
unit, then `systemctl restart`). Only units whose ActiveState is `active` are probed: a vLLM unit
is `activating` until its health wait passes, so a start in progress is never counted against it.
A unit that is `failed` (systemd gave up on it: its start limit, after restarts that kept failing)
is started again once it has been failed for `revive_after` seconds, that wait doubling with each
revival that does not end serving (at most `revive_max`); an `inactive` unit was stopped by an
operator (with Restart=always nothing else leaves it so) and is left alone.

Metrics go to the node exporter's textfile directory (written whole, then renamed, so a scrape
never reads half a file); the restart counters persist in the state directory. The API key is
read from its 0600 header file on each probe and sent only in the request header.

Runs as root under systemd (`vllm-watchdog.service`); python3 standard library only. The config
(rendered by plan/watchdog.py) names every command, so tests can replace them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

STATE_FILE = "restarts.json"
# sd-daemon priority prefixes: the journal stores the line at this level (journalctl -p warning).
ERR, WARNING, INFO = "<3>", "<4>", "<6>"
_print_lock = threading.Lock()
# Probes go straight to the instance, never through an http_proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(priority: str, message: str) -> None:
    """One journal line; the priority prefix is read by journald and not shown in `journalctl -o cat`."""
    with _print_lock:
        print(f"{priority}{message}", flush=True)


@dataclass(frozen=True)
class Instance:
    """One instance from the config."""

    unit: str
    model: str
    prompt: str
    completion_url: str
    health_url: str
    timeout: float
    health_timeout: float
    misses: int
    interval: float
    state_command: list[str]
    restart_commands: list[list[str]]
    restart_timeout: float
    revive_commands: list[list[str]] = field(default_factory=list)
    revive_after: float = 60.0
    revive_max: float = 1800.0

    @classmethod
    def from_config(cls, raw: dict[str, Any]) -> Instance:
        return cls(unit=str(raw["unit"]), model=str(raw["model"]), prompt=str(raw.get("prompt", "Hi")),
                   completion_url=str(raw["completion_url"]), health_url=str(raw["health_url"]),
                   timeout=float(raw["timeout"]), health_timeout=float(raw["health_timeout"]),
                   misses=max(1, int(raw["misses"])), interval=float(raw["interval"]),
                   state_command=[str(w) for w in raw["state_command"]],
                   restart_commands=[[str(w) for w in c] for c in raw["restart_commands"]],
                   restart_timeout=float(raw["restart_timeout"]),
                   revive_commands=[[str(w) for w in c] for c in raw.get("revive_commands", [])],
                   revive_after=float(raw.get("revive_after", 60)), revive_max=float(raw.get("revive_max", 1800)))


@dataclass(frozen=True)
class Outcome:
    """A probe's verdict: `ok` (a token came), `miss` (none within the deadline), `refused` (HTTP 4xx)."""

    verdict: str
    detail: str
    seconds: float
    timed_out: bool = False


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """Write a temporary file next to `path`, then rename it over `path`: readers see the old or the new."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@dataclass
class Metrics:
    """What the textfile says, shared by the instance threads; every change rewrites the file."""

    metrics_file: str
    state_dir: str
    units: list[str]
    restarts: dict[str, int] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)
    last_probe: dict[str, float] = field(default_factory=dict)
    last_probe_time: dict[str, float] = field(default_factory=dict)
    up: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)
    _write_failed: bool = False

    def load(self) -> None:
        """Restart counters from the state directory: a counter must not fall back when the watchdog restarts."""
        try:
            with open(os.path.join(self.state_dir, STATE_FILE), encoding="utf-8") as handle:
                saved = json.load(handle)
            self.restarts = {u: int(saved.get(u, 0)) for u in self.units}
        except (OSError, ValueError, AttributeError):
            self.restarts = {u: 0 for u in self.units}

    def render(self) -> str:
        lines = [
            "# HELP vllm_watchdog_up 1 while the vLLM engine watchdog runs, 0 after it stopped cleanly.",
            "# TYPE vllm_watchdog_up gauge",
            f"vllm_watchdog_up {self.up}",
            "# HELP vllm_watchdog_restarts_total Restarts of a vLLM unit by the watchdog after missed probes.",
            "# TYPE vllm_watchdog_restarts_total counter",
            *(f'vllm_watchdog_restarts_total{{unit="{_escape_label(u)}"}} {self.restarts.get(u, 0)}'
              for u in self.units),
            "# HELP vllm_watchdog_consecutive_misses One-token probes missed in a row (reset by an answer or "
            "a restart).",
            "# TYPE vllm_watchdog_consecutive_misses gauge",
            *(f'vllm_watchdog_consecutive_misses{{unit="{_escape_label(u)}"}} {self.misses.get(u, 0)}'
              for u in self.units),
            "# HELP vllm_watchdog_last_probe_seconds Duration of the last one-token probe (its deadline when "
            "it got no answer).",
            "# TYPE vllm_watchdog_last_probe_seconds gauge",
            *(f'vllm_watchdog_last_probe_seconds{{unit="{_escape_label(u)}"}} {self.last_probe[u]:.3f}'
              for u in self.units if u in self.last_probe),
            "# HELP vllm_watchdog_last_probe_timestamp_seconds When the unit was last probed (only active "
            "units are).",
            "# TYPE vllm_watchdog_last_probe_timestamp_seconds gauge",
            *(f'vllm_watchdog_last_probe_timestamp_seconds{{unit="{_escape_label(u)}"}} '
              f"{self.last_probe_time[u]:.3f}" for u in self.units if u in self.last_probe_time),
        ]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Rewrite the textfile; a failure is logged once and never stops the probes."""
        with self.lock:
            text = self.render()
            try:
                write_atomically(self.metrics_file, text)
                self._write_failed = False
            except OSError as error:
                if not self._write_failed:
                    log(WARNING, f"cannot write the metrics file: {error}")
                self._write_failed = True

    def probed(self, unit: str, misses: int, seconds: float | None) -> None:
        with self.lock:
            self.misses[unit] = misses
            if seconds is not None:
                self.last_probe[unit] = seconds
                self.last_probe_time[unit] = time.time()
        self.write()

    def restarted(self, unit: str) -> int:
        """Count a restart and persist the counters before the restart runs; returns the new count."""
        with self.lock:
            self.restarts[unit] = self.restarts.get(unit, 0) + 1
            self.misses[unit] = 0
            count = self.restarts[unit]
            try:
                write_atomically(os.path.join(self.state_dir, STATE_FILE),
                                 json.dumps(self.restarts, sort_keys=True) + "\n", mode=0o600)
            except OSError as error:
                log(WARNING, f"cannot save the restart counters in {self.state_dir}: {error}")
        self.write()
        return count


def read_headers(path: str | None) -> dict[str, str]:
    """`Name: value` lines of the key header file (read as root, each probe: a new key needs no restart)."""
    if not path:
        return {}
    headers = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            name, sep, value = line.strip().partition(":")
            if sep and name.strip():
                headers[name.strip()] = value.strip()
    return headers


def probe_completion(inst: Instance, headers: dict[str, str]) -> Outcome:
    """POST a one-token completion; a miss is no token within the deadline (or an error answer)."""
    body = json.dumps({"model": inst.model, "prompt": inst.prompt, "max_tokens": 1, "temperature": 0}).encode()
    request = urllib.request.Request(inst.completion_url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    start = time.monotonic()
    try:
        with _opener.open(request, timeout=inst.timeout) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        seconds = time.monotonic() - start
        if 400 <= error.code < 500:
            return Outcome("refused", f"HTTP {error.code}", seconds)
        return Outcome("miss", f"HTTP {error.code}", seconds)
    except (OSError, ValueError, http.client.HTTPException) as error:
        seconds = time.monotonic() - start
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return Outcome("miss", f"no answer within {inst.timeout:g} s", seconds, timed_out=True)
        return Outcome("miss", f"{type(reason).__name__}: {reason}", seconds)
    seconds = time.monotonic() - start
    if seconds > inst.timeout:
        return Outcome("miss", f"answered only after {seconds:.1f} s (deadline {inst.timeout:g} s)", seconds,
                       timed_out=True)
    if not isinstance(answer, dict) or not answer.get("choices"):
        return Outcome("miss", "answer without a completion", seconds)
    return Outcome("ok", "answered", seconds)


def probe_health(inst: Instance) -> str:
    """What /health said: "200", "HTTP 503", "timed out", or the connection error."""
    try:
        with _opener.open(inst.health_url, timeout=inst.health_timeout) as response:
            return str(response.status)
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"
    except (OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return f"timed out after {inst.health_timeout:g} s"
        return f"{type(reason).__name__}: {reason}"


def health_phrase(health: str) -> str:
    if health == "200":
        return "while /health answered 200"
    if health.startswith("HTTP"):
        return f"and /health answered {health}"
    return f"and /health did not answer ({health})"


class Watcher(threading.Thread):
    """One instance's loop: probe every interval, restart after `misses` misses in a row."""

    def __init__(self, inst: Instance, metrics: Metrics, key_header_file: str | None, stop: threading.Event):
        super().__init__(name=f"watch-{inst.unit}", daemon=True)
        self.inst, self.metrics, self.key_header_file, self.stop = inst, metrics, key_header_file, stop
        self.misses: list[Outcome] = []
        self.state = ""
        self.refused = ""
        self.key_problem = ""
        self.failed_since: float | None = None
        self.revive_wait = inst.revive_after

    def unit_state(self) -> str:
        try:
            done = subprocess.run(self.inst.state_command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"unknown ({error})"
        return done.stdout.strip() if done.returncode == 0 else f"unknown (exit {done.returncode})"

    def headers(self) -> dict[str, str]:
        try:
            headers = read_headers(self.key_header_file)
            self.key_problem = ""
            return headers
        except OSError as error:
            if not self.key_problem:
                log(WARNING, f"{self.inst.unit}: cannot read the API key header file: {error.strerror}")
            self.key_problem = str(error)
            return {}

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = time.monotonic() + self.inst.interval
            try:
                if self.tick():  # a restarted unit gets a whole interval before its first probe
                    next_at = time.monotonic() + self.inst.interval
            except Exception as error:  # a bug in one probe must not end the watch
                log(ERR, f"{self.inst.unit}: watchdog error: {type(error).__name__}: {error}")

    def tick(self) -> bool:
        """One probe; True when it restarted the unit."""
        inst = self.inst
        state = self.unit_state()
        if state != self.state:
            if state != "active":
                log(INFO, f"{inst.unit}: unit is {state}; not probed until it is active")
            elif self.state:
                log(INFO, f"{inst.unit}: unit is active; probing every {inst.interval:g} s")
            self.state = state
        if state != "active":
            if self.misses:
                self.misses = []
            self.metrics.probed(inst.unit, 0, None)
            return self.revive_if_failed(state)
        self.failed_since = None
        health: list[str] = []
        checker = threading.Thread(target=lambda: health.append(probe_health(inst)), daemon=True)
        checker.start()  # alongside the completion, so it adds nothing to the restart bound
        outcome = probe_completion(inst, self.headers())
        checker.join(inst.health_timeout + 1)
        health_said = health[0] if health else "no result"
        if outcome.verdict == "refused":
            if outcome.detail != self.refused:
                log(WARNING, f"{inst.unit}: the probe was refused with {outcome.detail} (wrong API key or model "
                             f"name '{inst.model}'?); not counted as a miss")
            self.refused = outcome.detail
            self.metrics.probed(inst.unit, len(self.misses), outcome.seconds)
            return False
        self.refused = ""
        if outcome.verdict == "ok":
            self.revive_wait = inst.revive_after  # serving again: the next failure waits the shortest time
            if self.misses:
                log(INFO, f"{inst.unit}: answered again after {len(self.misses)} missed probe(s), "
                          f"in {outcome.seconds:.2f} s")
            self.misses = []
            self.metrics.probed(inst.unit, 0, outcome.seconds)
            return False
        self.misses.append(outcome)
        self.metrics.probed(inst.unit, len(self.misses), outcome.seconds)
        if len(self.misses) < inst.misses:
            log(WARNING, f"{inst.unit}: probe missed ({len(self.misses)}/{inst.misses}): {outcome.detail}; "
                         f"/health: {health_said}")
            return False
        if all(m.timed_out for m in self.misses):
            what = f"got no answer within {inst.timeout:g} s"
        else:
            what = f"failed (last: {outcome.detail})"
        log(ERR, f"{inst.unit}: engine hung: {len(self.misses)} one-token completions in a row {what} "
                 f"{health_phrase(health_said)}; restarting")
        self.restart()
        return True

    def revive_if_failed(self, state: str) -> bool:
        """Start a unit systemd gave up on, once it has been `failed` for the current wait; True when started."""
        inst = self.inst
        if state != "failed" or not inst.revive_commands:
            self.failed_since = None
            return False
        now = time.monotonic()
        if self.failed_since is None:
            self.failed_since = now
            log(WARNING, f"{inst.unit}: unit failed (systemd stopped restarting it); starting it again in "
                         f"{self.revive_wait:g} s")
            return False
        if now - self.failed_since < self.revive_wait:
            return False
        log(ERR, f"{inst.unit}: failed for {now - self.failed_since:.0f} s; starting it again "
                 "(systemctl reset-failed, then start)")
        self.failed_since = None
        self.revive_wait = min(inst.revive_max, self.revive_wait * 2)  # back to revive_after once it serves
        self.restart(inst.revive_commands, "started again")
        return True

    def restart(self, commands: list[list[str]] | None = None, what: str = "restarted") -> None:
        """Count, run the restart commands, then wait (up to restart_timeout) for the unit to be active."""
        inst = self.inst
        self.misses = []
        count = self.metrics.restarted(inst.unit)
        start = time.monotonic()
        for command in inst.restart_commands if commands is None else commands:
            left = max(1.0, inst.restart_timeout - (time.monotonic() - start))
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=left)
            except (OSError, subprocess.TimeoutExpired) as error:
                log(ERR, f"{inst.unit}: restart command {command[:3]} failed: {error}")
                continue
            if done.returncode != 0:
                said = (done.stderr or done.stdout).strip().splitlines()
                log(ERR, f"{inst.unit}: restart command {' '.join(command)} exited {done.returncode}"
                         + (f": {said[-1]}" if said else ""))
        while not self.stop.is_set():
            state = self.unit_state()
            if state == "active":
                log(INFO, f"{inst.unit}: {what} by the watchdog (restart {count}); active again after "
                          f"{time.monotonic() - start:.0f} s")
                self.state = state
                return
            if state == "failed":  # the start itself failed: waiting longer brings nothing
                log(ERR, f"{inst.unit}: failed again after the watchdog's start; see journalctl -u {inst.unit}")
                return
            if time.monotonic() - start > inst.restart_timeout:
                log(ERR, f"{inst.unit}: not active {inst.restart_timeout:g} s after the restart ({state}); "
                         "probing resumes once it is")
                return
            self.stop.wait(min(2.0, inst.interval))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", required=True, help="JSON written by the deploy (plan/watchdog.py)")
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as handle:
        config = json.load(handle)
    instances = [Instance.from_config(raw) for raw in config["instances"]]
    metrics = Metrics(metrics_file=config["metrics_file"], state_dir=config["state_dir"],
                      units=[i.unit for i in instances])
    metrics.load()
    metrics.write()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    for inst in instances:
        log(INFO, f"watching {inst.unit}: one-token completion of '{inst.model}' every {inst.interval:g} s, "
                  f"deadline {inst.timeout:g} s, restart after {inst.misses} misses in a row")
    watchers = [Watcher(inst, metrics, config.get("key_header_file"), stop) for inst in instances]
    for watcher in watchers:
        watcher.start()
    while not stop.wait(3600):
        pass
    metrics.up = 0
    metrics.write()
    log(INFO, "watchdog stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
