"""`python -m convbench.orchestrate.ray_job train-model ...`: the entrypoint of the pipeline's Ray jobs.

The kfp train-model step submits it (`kfp_steps._train_on_cluster`) to the Ray cluster, where it
trains one model of a saved Dataset with `kfp_steps.train_here` under Ray Train.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convbench.env import setup_environment
from convbench.errors import ConvbenchError
from convbench.log import make_logger
from convbench.orchestrate.kfp_steps import train_here
from convbench.orchestrate.ray_train import RayOptions



def main(argv: list[str] | None = None) -> int:
    """`python -m convbench.orchestrate.ray_job train-model ...`: the entrypoint of the pipeline's Ray jobs."""
    setup_environment()
    parser = argparse.ArgumentParser(prog="python -m convbench.orchestrate.ray_job")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train-model", help="train one model of a saved Dataset on the Ray cluster this job runs in")
    p.add_argument("--dataset", required=True, help="a Dataset artifact folder (kfp_steps.prepare_dataset: arrays, manifest, config)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="run-directory layout for this model's files")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--gpus-per-worker", type=int, default=0)
    p.add_argument("--run-name", default="")
    args = parser.parse_args(argv)
    options = RayOptions(workers=args.workers, gpus_per_worker=args.gpus_per_worker, address="auto",
                         run_name=args.run_name or "convbench")
    try:
        train_here(args.dataset, args.model, args.out, options, log=make_logger(Path(args.out)))
    except ConvbenchError as exc:
        print(f"convbench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
