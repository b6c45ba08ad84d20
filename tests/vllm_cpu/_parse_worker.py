"""Runs inside the controller vLLM venv: parses argument lists with vLLM's own serve parser.

Kept apart from realparser.py so the test process never imports vllm (9 s, 1 GiB, and it would
pin the test interpreter to the vLLM venv). Usage: python _parse_worker.py IN.json OUT.json, where
IN is a list of argument lists and OUT receives one {"ok": bool, "message": str} per list.
vLLM logs to stdout, hence files rather than pipes.
"""

import contextlib
import io
import json
import sys


def main() -> int:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm-api-server"))
    known = {opt for action in parser._actions for opt in action.option_strings}
    with open(sys.argv[1]) as f:
        arg_lists = json.load(f)
    results = []
    for args in arg_lists:
        results.append(check(parser, known, args, validate_parsed_serve_args))
    with open(sys.argv[2], "w") as f:
        json.dump(results, f)
    return 0


def check(parser, known: set[str], args: list[str], validate) -> dict:
    # argparse accepts unique prefixes of long options; a rendered command line must spell flags out,
    # or a later vLLM adding a similar flag silently changes its meaning.
    for arg in args:
        if arg.startswith("--") and len(arg) > 2:
            name = arg.split("=", 1)[0].split(".", 1)[0].replace("_", "-")
            if name not in known:
                matches = sorted(o for o in known if o.startswith(name))
                if len(matches) == 1:
                    return {"ok": False, "message": f"{arg}: abbreviation of {matches[0]}; spell the flag out"}
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(args)
            validate(ns)
    except SystemExit as exc:
        # argparse prints the whole usage (hundreds of lines) before "PROG: error: ..."; keep the error.
        lines = [line for line in err.getvalue().splitlines() if ": error: " in line]
        return {"ok": False, "message": "\n".join(lines) or f"parser exited with {exc.code}"}
    except Exception as exc:  # validate_parsed_serve_args raises TypeError/ValueError with the reason
        return {"ok": False, "message": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "message": "accepted"}


if __name__ == "__main__":
    raise SystemExit(main())
