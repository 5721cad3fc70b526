"""`python -m convbench.orchestrate.ray_job train-model ...`: the entrypoint of the pipeline's Ray jobs.

The kfp train-model step submits it (`kfp_steps._train_on_cluster`) to the Ray cluster, where it
trains one model of a saved Dataset with `kfp_steps.train_here` under Ray Train. Built like the
`convbench` command: argparse, `main(argv) -> int`, console logging, and errors through
`errors.run_command` (one `convbench: error: ...` line, status 2).
"""

from __future__ import annotations

import argparse

from convbench.env import setup_environment
from convbench.errors import run_command
from convbench.log import setup_console_logging
from convbench.orchestrate.kfp_steps import train_here
from convbench.orchestrate.ray_train import RayOptions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m convbench.orchestrate.ray_job",
                                     description="The entrypoint of the Kubeflow pipeline's Ray jobs.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train-model", help="train one model of a saved Dataset on the Ray cluster this job runs in")
    p.add_argument("--dataset", required=True, help="a Dataset artifact folder (kfp_steps.prepare_dataset: arrays, manifest, config)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="run-directory layout for this model's files")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--gpus-per-worker", type=int, default=0)
    p.add_argument("--run-name", default="")
    p.set_defaults(func=cmd_train_model)
    return parser


def cmd_train_model(args) -> int:
    options = RayOptions(workers=args.workers, gpus_per_worker=args.gpus_per_worker, address="auto",
                         run_name=args.run_name or "convbench")
    train_here(args.dataset, args.model, args.out, options)  # its lines also go to --out's run.log
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m convbench.orchestrate.ray_job train-model ...`: the entrypoint of the pipeline's Ray jobs."""
    setup_environment()
    args = build_parser().parse_args(argv)
    setup_console_logging()
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
