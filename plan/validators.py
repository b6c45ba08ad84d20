"""Typed validators for settings: each takes the raw value and returns it normalised, or raises Invalid.

A validator knows one kind of value (a URL, an absolute host path, a host name, ...), so the schema
states what a setting is by naming its validator, and every setting of that kind is checked alike.
Patterns are anchored with `fullmatch`: a value ending in a newline does not pass as `$` would let it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

Validator = Callable[[Any], Any]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([KMGT]?)i?B?", re.IGNORECASE)
_NGINX_SIZE = re.compile(r"(\d{1,10})([kmg]?)", re.IGNORECASE)
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_HOST_PATH = re.compile(r"/[A-Za-z0-9._+@:=,~/-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Invalid(ValueError):
    """The value is wrong; the message says what is expected (the caller adds the field's name)."""


def optional(check: Validator) -> Validator:
    """None passes (the default or "let the planner choose"); anything else goes through `check`."""
    def validate(value: Any) -> Any:
        return None if value is None else check(value)
    validate.__doc__ = check.__doc__
    return validate


def secret(check: Validator, expected: str) -> Validator:
    """`check` whose refusal never shows the value (an API key must not reach the run's output)."""
    def validate(value: Any) -> Any:
        try:
            return check(value)
        except Invalid:
            raise Invalid(f"(value not shown) must be {expected}") from None
    return validate


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{value!r} must be True or False")
    return value


def integer(low: int, high: int | None = None) -> Validator:
    def validate(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"{value!r} must be an integer")
        if value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise Invalid(f"{value} is out of range; use {span}")
        return value
    return validate


def fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise Invalid(f"{value!r} must be a fraction in (0, 1], e.g. 0.9")
    return float(value)


def choice(*options: str) -> Validator:
    def validate(value: Any) -> str:
        if value not in options:
            raise Invalid(f"{value!r} is not one of {', '.join(options)}")
        return value
    return validate


def line(value: Any) -> str:
    """A non-empty single line of text: no line break, tab or other control character."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{value!r} must be a non-empty string")
    if _CONTROL.search(value):
        raise Invalid(f"{value!r} must be one line without control characters (line breaks, tabs, NUL)")
    return value


def pattern(regex: str, what: str) -> Validator:
    """Text matching `regex` as a whole; `what` tells the user what that is, with an example."""
    compiled = re.compile(regex)

    def validate(value: Any) -> str:
        text = line(value)
        if not compiled.fullmatch(text):
            raise Invalid(f"{value!r} is not {what}")
        return text
    return validate


def url(*schemes: str) -> Validator:
    """A URL with one of `schemes` and a host (file: URLs need a path), no white space or control characters."""
    schemes = schemes or ("http", "https")
    shown = " or ".join(f"{s}://" for s in schemes).replace("http:// or https://", "http(s)://")

    def validate(value: Any) -> str:
        if not isinstance(value, str) or not value.isascii() or _CONTROL.search(value) or re.search(r"\s", value):
            raise Invalid(f"{value!r} must be an {shown} URL of ASCII characters without spaces or control "
                          "characters (percent-encode the rest)")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as error:
            raise Invalid(f"{value!r} is not a URL: {error}") from None
        if parts.scheme not in schemes:
            raise Invalid(f"{value!r} must be an {shown} URL")
        if parts.scheme == "file":
            if not parts.path.startswith("/"):
                raise Invalid(f"{value!r} must be a file:// URL with an absolute path")
        elif not parts.hostname or not _is_host(parts.hostname):
            raise Invalid(f"{value!r} has no valid host name")
        if any(c in value for c in "\"'`;$\\<>|{}^#&") or re.search(r"%(?![0-9A-Fa-f]{2})", value):
            raise Invalid(f"{value!r} contains a character a mirror URL does not need (quotes, ;, $, \\, <>, |, "
                          "{}, #, &, or % not followed by two hex digits); percent-encode it")
        return value
    return validate


def _is_host(name: str) -> bool:
    """A host name per RFC 1123, or an IPv4/IPv6 address."""
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        pass
    if len(name) > 253:
        return False
    labels = name.rstrip(".").split(".")
    return all(_HOST_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def address(value: Any) -> str:
    """A host name (RFC 1123) or an IP address: what listens, or what another host connects to."""
    text = line(value)
    if not _is_host(text):
        raise Invalid(f"{value!r} is not a host name (letters, digits, '-', '.') or an IP address")
    return text


def host_path(value: Any) -> str:
    """An absolute path on the host of portable characters: it reaches unit files, shells and rsync."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise Invalid(f"{value!r} must be an absolute path on the host")
    if not _HOST_PATH.fullmatch(value):
        raise Invalid(f"{value!r} must be an absolute path of ASCII letters, digits and ._+@:=,~/- (no spaces, "
                      "quotes, '$', '%', ';' or control characters)")
    if "/../" in value + "/" or value.endswith("/.."):
        raise Invalid(f"{value!r} must not contain '..'")
    return value.rstrip("/") or "/"


def controller_path(kind: str) -> Validator:
    """A path on the controller that must exist: kind "file" or "dir" (`~` expands)."""
    def validate(value: Any) -> str:
        text = line(value)
        path = Path(text).expanduser()
        if kind == "dir" and not path.is_dir():
            raise Invalid(f"{value!r} is not a directory on the controller")
        if kind == "file" and not path.is_file():
            raise Invalid(f"{value!r} is not a file on the controller")
        return text
    return validate


def absolute_controller_path(value: Any) -> str:
    """A controller path that may not exist yet (it is created), but must be absolute."""
    text = line(value)
    if not Path(text).expanduser().is_absolute():
        raise Invalid(f"{value!r} must be an absolute path on the controller")
    return text


def strings(item: Validator = line, example: str = '["--seed", "0"]') -> Validator:
    """A list of strings, each checked by `item`; returned as a tuple."""
    def validate(value: Any) -> tuple[Any, ...]:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise Invalid(f"{value!r} must be a list of strings, e.g. {example}")
        if not all(isinstance(entry, str) for entry in value):
            raise Invalid(f"{value!r} must contain only strings")
        return tuple(item(entry) for entry in value)
    return validate


def env_map(value: Any) -> dict[str, str]:
    """Environment variables: NAME ([A-Za-z_][A-Za-z0-9_]*) -> a one-line value."""
    if not isinstance(value, Mapping):
        raise Invalid(f"{value!r} must be a dict of NAME: value")
    result = {}
    for name, raw in value.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise Invalid(f"{name!r} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise Invalid(f"{name}: {raw!r} must be a string or a number")
        text = str(raw)
        if _CONTROL.search(text):
            raise Invalid(f"{name}: {text!r} must be one line without control characters")
        result[name] = text
    return result


def parse_size(value: Any) -> int:
    """Bytes from an int or a string such as "64M" or "1.5G" (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(str(value))
    if not match:
        raise ValueError(value)
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


def size(value: Any) -> int:
    try:
        return parse_size(value)
    except ValueError:
        raise Invalid(f"{value!r} is not a size such as '64M' or '2G'") from None


def nginx_size(low: int, high: int) -> Validator:
    """A size as nginx's own parser reads it (digits, optional k/m/g), within `low`..`high` bytes.

    Stricter than `size`: nginx knows no fractions, 'KB' or 't', and such a value would fail only at
    `nginx -t` on the host; returned lower-cased, as it is written into the configuration.
    """
    def shown(n: int) -> str:
        for unit, factor in (("g", 1024 ** 3), ("m", 1024 ** 2), ("k", 1024)):
            if n % factor == 0:
                return f"{n // factor}{unit}"
        return str(n)

    def validate(value: Any) -> str:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        match = _NGINX_SIZE.fullmatch(text) if isinstance(text, str) else None
        if not match:
            raise Invalid(f"{value!r} is not an nginx size such as '16m' (digits, optionally followed by k, m or g)")
        number = int(match.group(1)) * 1024 ** " kmg".index(match.group(2).lower() or " ")
        if not low <= number <= high:
            raise Invalid(f"{value!r} is out of range; use {shown(low)}..{shown(high)}")
        return text.lower()
    return validate


def anything(value: Any) -> Any:
    """Checked elsewhere as a whole (e.g. `vllm_instances`, `mirror_presets`)."""
    return value
