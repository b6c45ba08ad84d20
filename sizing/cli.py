"""``python -m sizing``: fit a model to GPUs, list the catalogs. Exit 0 fits, 3 does not fit, 2 bad input."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from sizing.errors import SizingError
from sizing.fit import FitRequest, FitResult, fit
from sizing.hub import HUBS, HubModel
from sizing.model import ModelSpec
from sizing.versions import PINNED_VLLM_VERSION

EXIT_FITS, EXIT_BAD_INPUT, EXIT_DOES_NOT_FIT = 0, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as exit 2 with the option named (its default, kept explicit)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sizing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="will this model fit, with which vLLM settings, and why")
    f.add_argument("--model", required=True, help="catalog id/alias, a local model directory, or any hub ORG/NAME")
    f.add_argument("--hub", choices=HUBS, help="hub to read a model outside the catalog from (default huggingface)")
    f.add_argument("--hub-endpoint", help="hub URL (a mirror); default HF_ENDPOINT / MODELSCOPE_ENDPOINT, else the hub")
    f.add_argument("--revision", help="branch, tag or commit; sizes from the hub even for a catalog model")
    f.add_argument("--gpu", help="GPU name as nvidia-smi prints it, or an alias (4090, A100-80GB, T4 ...)")
    f.add_argument("--gpus", type=int, default=1, help="GPUs per node (default 1)")
    f.add_argument("--gpu-memory-gib", type=float, help="memory per GPU when it differs from the catalog")
    f.add_argument("--nodes", type=int, default=1,
                   help="nodes of --gpus GPUs each serving the one model (TP within a node, PP across nodes)")
    f.add_argument("--master-addr", default="HEAD_ADDRESS", help="with --nodes: the head's address in the "
                   "printed per-node commands")
    f.add_argument("--master-port", type=int, default=29500, help="with --nodes: the head's rendezvous port")
    f.add_argument("--tensor-parallel-size", type=int)
    f.add_argument("--pipeline-parallel-size", type=int)
    f.add_argument("--dtype")
    f.add_argument("--quantization")
    f.add_argument("--kv-cache-dtype")
    f.add_argument("--gpu-memory-utilization", type=float)
    f.add_argument("--max-model-len", type=int)
    f.add_argument("--max-num-batched-tokens", type=int)
    f.add_argument("--max-num-seqs", type=int)
    f.add_argument("--block-size", type=int)
    f.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
                   help="skip CUDA graphs (--no-enforce-eager: keep them, as vLLM does by default); left out: chosen")
    f.add_argument("--gpu-memory-used-gib", type=float,
                   help="memory other processes hold on each GPU at start-up (nvidia-smi's used)")
    f.add_argument("--cudagraph-capture-sizes", type=_sizes, metavar="N,N,...",
                   help="batch sizes CUDA graphs are captured for (--compilation-config cudagraph_capture_sizes)")
    f.add_argument("--no-p2p", dest="p2p", action="store_false", default=None, help="GPUs cannot talk peer to peer")
    f.add_argument("--use-all-gpus", action="store_true", help="largest valid TP instead of the smallest that fits")
    f.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    f.add_argument("--cpu-memory-gib", type=float, help="host memory for --device cpu")
    f.add_argument("--kv-cache-memory-bytes", type=int, help="explicit KV cache size (CPU backend)")
    f.add_argument("--vllm-version", help=f"target vLLM version (default {PINNED_VLLM_VERSION})")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    sub.add_parser("gpus", help="list the GPU catalog")
    sub.add_parser("models", help="list the model catalog")
    c = sub.add_parser("calibration", help="predicted vs vLLM's logged figures of past deploys, median error")
    c.add_argument("--file", help="calibration file (default VLLM_DEPLOY_CALIBRATION, else "
                                  "$XDG_DATA_HOME/vllm-deploy/calibration.jsonl)")
    c.add_argument("--json", action="store_true", help="print the records and the medians as one JSON object")
    return parser


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of batch sizes") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must list positive batch sizes, e.g. 1,2,4,8")
    return sizes


def _resolve(args: argparse.Namespace) -> tuple[str | ModelSpec, HubModel | None]:
    """The model to fit: a local directory or catalog entry as before; the hub for other ORG/NAME or a --revision."""
    from pathlib import Path

    from sizing.catalog import sized_from_hub
    from sizing.hub import fetch_model
    from sizing.model import model_from_config

    name = args.model
    if Path(name).expanduser().is_dir() or not sized_from_hub(name, args.revision):
        return name, None  # a local directory, or the catalog (offline; its "unknown model" names close matches)
    found = fetch_model(name, args.hub or "huggingface", args.revision, args.hub_endpoint)
    for note in found.notes:
        sys.stderr.write(f"note: {note}\n")
    return model_from_config(found.config, name=name, weight_bytes=found.weight_bytes), found


def _hub_summary(found: HubModel) -> dict[str, object]:
    return {
        "hub": found.hub, "repo": found.repo, "revision": found.revision, "sha": found.sha,
        "weight_bytes": found.weight_bytes, "weight_source": found.weight_source, "from_cache": found.from_cache,
    }  # fmt: skip


def _table(result: FitResult, found: HubModel | None = None, master_addr: str = "HEAD_ADDRESS",
           master_port: int = 29500) -> str:
    verdict = {"ok": "FITS", "kv_too_small": "DOES NOT FIT (KV cache too small)", "oom": "DOES NOT FIT (out of memory)"}
    when = {"load_or_profile": "loading weights or profiling",
            "startup_free_memory": "at start-up: less memory free than requested",
            "cuda_graph_capture": "capturing CUDA graphs, after the KV cache is allocated"}
    shown = verdict[result.outcome]
    if result.outcome == "oom" and result.failure in when:
        shown = f"DOES NOT FIT (out of memory {when[result.failure]})"
    rows = [
        ("verdict", shown),
        ("model", result.model),
        *([("hub", f"{found.hub} @{found.revision} ({found.sha[:12]}{', cached' if found.from_cache else ''}), "
                   f"weights from {found.weight_source}")] if found else []),
        ("gpu", result.gpu or "-"),
        ("vLLM", result.vllm_version),
        ("tensor x pipeline", f"{result.tensor_parallel_size} x {result.pipeline_parallel_size}"),
        *([("nodes", f"{result.nodes} x {result.ranks_per_node} {'GPUs' if result.gpu else 'ranks'} per node")]
          if result.nodes > 1 else []),
        ("dtype / kv cache", f"{result.dtype} / {result.kv_cache_dtype}"),
        ("gpu memory utilization", f"{result.gpu_memory_utilization:g}"),
        ("max model len", f"{result.max_model_len:,}"),
        ("weights per GPU", f"{result.weights_gib:.2f} GiB"),
        ("activation peak", f"{result.activation_gib:.2f} GiB"),
        ("KV cache per GPU", f"{result.kv_cache_gib:.2f} GiB"),
        ("KV cache tokens", f"{result.kv_cache_tokens:,}"),
        ("max concurrency", f"{result.max_concurrency:.2f}x"),
        ("largest context that fits", f"{result.max_model_len_fit:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append("")
    lines.append("why:")
    lines += [f"  - {r}" for r in result.reasons]
    if result.suggestions:
        lines.append("ways out:" if not result.fits else "also consider:")
        lines += [f"  - {s}" for s in result.suggestions]
    lines.append("")
    lines.append("vllm serve MODEL " + " ".join(result.vllm_args))
    if result.nodes > 1:
        lines += ["", f"per node ({_executor_text(result)}):"]
        for launch in _launches(result, master_addr, master_port):
            who = f"node {launch.rank}" + (" (head)" if launch.head else "")
            steps = [" ".join(launch.ray_start)] if launch.ray_start else []
            if launch.serve_args is not None:
                steps.append(" ".join(["vllm serve MODEL", *result.vllm_args, *launch.serve_args]))
            lines.append(f"  {who}: " + " && ".join(steps) if len(steps) == 1 else f"  {who}: {steps[0]}")
            lines += [f"  {' ' * len(who)}  {step}" for step in steps[1:]]
    return "\n".join(lines)


def _executor_text(result: FitResult) -> str:
    from sizing.multinode import executor_for

    if executor_for(result.vllm_version) == "mp":
        return f"vLLM {result.vllm_version}'s own multi-node executor; followers headless"
    return f"vLLM {result.vllm_version} predates the multi-node executor (0.11.1): a Ray cluster"


def _launches(result: FitResult, master_addr: str, master_port: int) -> tuple:
    from sizing.multinode import node_launches

    return node_launches(result.nodes, master_addr, master_port, result.vllm_version)


def _calibration(args: argparse.Namespace) -> int:
    """The deploys' records and the median absolute error per GPU and vLLM version; exit 0 even when empty."""
    from pathlib import Path

    from sizing.calibration import calibration_path, load_records, median_errors, records_table, summary_table

    path = Path(args.file).expanduser() if args.file else calibration_path()
    records = load_records(path)
    if args.json:
        medians = [{"gpu": gpu, "vllm_version": version, "median_abs_error_percent": errors}
                   for (gpu, version), errors in median_errors(records).items()]
        print(json.dumps({"file": str(path), "records": records, "medians": medians}, ensure_ascii=False))
        return EXIT_FITS
    if not records:
        print(f"no calibration records in {path} (a deploy appends one after each verified start)")
        return EXIT_FITS
    print(f"{len(records)} records in {path}\n")
    print(records_table(records))
    print("\nmedian absolute error per GPU and vLLM version:")
    print(summary_table(records))
    return EXIT_FITS


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "gpus":
            from sizing.catalog import find_gpu, gpu_names

            for name in gpu_names():
                gpu = find_gpu(name)
                cc = ".".join(map(str, gpu.compute_capability))
                print(f"{gpu.name:40} {gpu.memory_gib:7.2f} GiB  cc {cc}  {', '.join(gpu.aliases)}")
            return EXIT_FITS
        if args.command == "models":
            from sizing.catalog import find_model, model_ids

            for model_id in model_ids():
                entry = find_model(model_id)
                print(f"{entry.id:50} {entry.quantization or '-':8} {', '.join(entry.aliases)}")
            return EXIT_FITS
        if args.command == "calibration":
            return _calibration(args)
        model, found = _resolve(args)
        request = FitRequest(
            model=model,
            gpu=args.gpu,
            gpus=args.gpus,
            gpu_memory_gib=args.gpu_memory_gib,
            nodes=args.nodes,
            tensor_parallel_size=args.tensor_parallel_size,
            pipeline_parallel_size=args.pipeline_parallel_size,
            dtype=args.dtype,
            quantization=args.quantization,
            kv_cache_dtype=args.kv_cache_dtype,
            gpu_memory_utilization=args.gpu_memory_utilization,
            max_model_len=args.max_model_len,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_num_seqs=args.max_num_seqs,
            enforce_eager=args.enforce_eager,
            gpu_memory_used_gib=args.gpu_memory_used_gib,
            cudagraph_capture_sizes=args.cudagraph_capture_sizes,
            vllm_version=args.vllm_version,
            p2p=args.p2p,
            device=args.device,
            cpu_memory_gib=args.cpu_memory_gib,
            kv_cache_memory_bytes=args.kv_cache_memory_bytes,
            block_size=args.block_size,
            use_all_gpus=args.use_all_gpus,
        )
        result = fit(request)
    except SizingError as exc:
        flag = "--" + exc.field.replace("_", "-")
        sys.stderr.write(f"error: {flag}: {exc.message}\n")
        return EXIT_BAD_INPUT
    if args.json:
        data = result.to_dict()
        if found is not None:
            data["hub"] = _hub_summary(found)
        if result.nodes > 1:
            data["node_launches"] = [{"rank": n.rank, "head": n.head, "serve_args": n.serve_args,
                                      "ray_start": n.ray_start}
                                     for n in _launches(result, args.master_addr, args.master_port)]
        print(json.dumps(data, ensure_ascii=False))
    else:
        print(_table(result, found, args.master_addr, args.master_port))
    return EXIT_FITS if result.fits else EXIT_DOES_NOT_FIT
