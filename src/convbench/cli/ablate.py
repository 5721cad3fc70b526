"""`convbench ablate`: train recipe variants into a run folder, then re-render its REPORT.md."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from convbench import rundir
from convbench.analysis.ablation import BASELINE, DEFAULT_VARIANTS, parse_variants, PRECISION_VARIANT, VARIANTS
from convbench.cli.options import add_lang_option, add_run_options, open_run_folder, resolve_config
from convbench.errors import ConvbenchError
from convbench.experiment.ablation import run_ablation
from convbench.i18n import LANGUAGES
from convbench.models import model_info
from convbench.report.document import write_report

logger = logging.getLogger(__name__)


def add_commands(subparsers) -> None:
    """Add `convbench ablate` to the CLI (called by convbench.cli.commands.build_parser)."""

    p = subparsers.add_parser(
        "ablate", help="train recipe variants (augmentation none/crop+flip/full, regularizers off) and test what helped")
    add_run_options(p)
    add_lang_option(p)
    p.add_argument("--variants", help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all = {', '.join(DEFAULT_VARIANTS)}; "
                   f"{BASELINE} is always run; {PRECISION_VARIANT} only when named)")
    p.set_defaults(func=cmd_ablate)



def _recorded_language(run_dir: Path) -> str | None:
    """The report language a `convbench run` recorded in run_dir/results.json (None without one)."""
    try:
        lang = (json.loads(rundir.results_path(run_dir).read_text()).get("config") or {}).get("lang")
    except (OSError, ValueError, AttributeError):
        return None

    return lang if lang in LANGUAGES else None



def cmd_ablate(args) -> int:
    """`convbench ablate`: run the ablation into --out, then re-render its REPORT.md if it has one."""

    variants = parse_variants(args.variants)
    cfg = resolve_config(args)
    if not args.models:
        # Transfer models train their head on cached features, where augmentation cannot act:
        # ablate them only when asked by name.
        custom = tuple(n for n in cfg.models if model_info(n).kind == "custom")
        if not custom:
            raise ConvbenchError("the config selects no custom CNN to ablate; pass --models with the models to ablate")
        cfg = dataclasses.replace(cfg, models=custom, overrides={k: v for k, v in cfg.overrides.items() if k in custom})
    with open_run_folder(args.out, cfg, kind="ablate") as out:
        # --lang when given; else the language the `convbench run` in this folder recorded, so that the
        # ablation's figures match the report they join; else the config's (en by default).
        lang = cfg.lang if getattr(args, "lang", None) else (_recorded_language(out) or cfg.lang)
        cfg = dataclasses.replace(cfg, lang=lang)
        logger.info(f"convbench ablate: models {', '.join(cfg.models)}; variants {', '.join(variants)}; seeds {cfg.seeds}; out {out}")
        run_ablation(cfg, out, variants)
        if rundir.results_path(out).exists():

            try:
                write_report(out, lang=lang)
            except ConvbenchError as exc:
                logger.info(f"REPORT.md not re-rendered: {exc}")
        else:
            logger.info(f"no results.json in {out}: the ablation is in {out / rundir.ABLATION_LEDGER}; "
                        f"`convbench run --out {out}` adds the full report")
    return 0
