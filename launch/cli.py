"""The ``constellation`` command.

  constellation up [--preset tiny] [--set section.key=value ...]
  constellation monitor RUN_DIR
  constellation roles                                 (built-in and plugin implementations)
  constellation config [--preset tiny] [--set ...]   (print the resolved config)
  constellation table RUN_DIR                        (the pass@k table of a run)
  constellation study [--preset study] [--seeds 4] [--out study] [--report-only]
  constellation probe [--preset tiny] [--problems 100] [--samples 8]   (is the task in the ZPD?)
  constellation verify --verifier math FILE.jsonl    (verify {gold, pred} lines)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from constellation.protocol import config as config_mod
from launch import verify
from constellation.runtime.registry import KINDS, describe, entries, shadowed_plugins


def _cmd_up(args: argparse.Namespace) -> int:
    from launch.supervisor import SupervisorError, up

    console = Console()
    try:
        code, run_dir = up(args.preset, args.set, console, run_dir=Path(args.run_dir) if args.run_dir else None)
    except (config_mod.ConfigError, SupervisorError) as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    console.print(f"run directory: {run_dir}")
    return code


def _cmd_monitor(args: argparse.Namespace) -> int:
    from launch.monitor import monitor

    if not Path(args.run_dir).is_dir():
        print(f"error: no run directory at {args.run_dir}", file=sys.stderr)
        return 2
    monitor(Path(args.run_dir), refresh=args.refresh, once=args.once)
    return 0


def _cmd_roles(args: argparse.Namespace) -> int:
    table = Table(title="role implementations (impl = name, or 'package.module:Class')")
    for col in ("role", "impl", "class", "what / source"):
        table.add_column(col)
    for kind in KINDS:
        for name, entry in entries(kind).items():
            what = describe(entry.path) if entry.builtin else entry.source
            table.add_row(kind, name, entry.path, what)
        for entry in shadowed_plugins(kind):
            table.add_row(kind, entry.name, entry.path, entry.source + " (shadowed by the built-in)")
    Console().print(table)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.reference:
        print(config_reference_markdown() if args.markdown else
              "\n".join(f"{key} = {default}    # {help_text}" for key, default, help_text in config_mod.describe()))
        return 0
    try:
        print(config_mod.to_toml(config_mod.load(args.preset, args.set)))
    except config_mod.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def config_reference_markdown() -> str:
    """The README's config reference table (a test keeps the README in sync)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, help_text in config_mod.describe():
        rows.append(f"| `{key}` | `{default}` | {help_text.replace('|', '/')} |")
    return "\n".join(rows)


def _cmd_table(args: argparse.Namespace) -> int:
    from launch.console import pass_at_k_table

    Console().print(pass_at_k_table(Path(args.run_dir)))
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from launch.study_report import StudyError
    from launch.supervisor import SupervisorError
    from launch.study import run_study

    console = Console()
    try:
        run_study(args.preset, args.seeds, args.set, Path(args.out), console, first_seed=args.first_seed,
                  n_boot=args.bootstrap, report_only=args.report_only, parallel=args.parallel)
    except (config_mod.ConfigError, SupervisorError, StudyError) as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from launch.probe import probe

    console = Console()
    try:
        cfg = config_mod.load(args.preset, args.set)
    except config_mod.ConfigError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    result = probe(cfg, n_problems=args.problems, samples=args.samples, console=console)
    return 0 if result.zone == "in" else 3


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="constellation", description="LLM self-training as a constellation of processes")
    sub = ap.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--preset", default="tiny", help="preset name in constellation/presets or a TOML path (default: tiny)")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one config field (repeatable); the value is read as TOML")

    p = sub.add_parser("up", help="run the whole constellation")
    with_config(p)
    p.add_argument("--run-dir", help="run here instead of a new runs/<name>-<time>; an interrupted run there resumes")
    p.set_defaults(fn=_cmd_up)
    p = sub.add_parser("monitor", help="live view of a run directory")
    p.add_argument("run_dir")
    p.add_argument("--refresh", type=float, default=1.0)
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.set_defaults(fn=_cmd_monitor)
    p = sub.add_parser("roles", help="list role implementations")
    p.set_defaults(fn=_cmd_roles)
    p = sub.add_parser("config", help="print the resolved config (or --reference: every field with help)")
    with_config(p)
    p.add_argument("--reference", action="store_true")
    p.add_argument("--markdown", action="store_true", help="with --reference: as a markdown table")
    p.set_defaults(fn=_cmd_config)
    p = sub.add_parser("table", help="print the pass@k table of a run")
    p.add_argument("run_dir")
    p.set_defaults(fn=_cmd_table)
    p = sub.add_parser("study", help="several seeded trajectories and a report with bootstrap intervals")
    with_config(p)
    p.set_defaults(preset="study")
    p.add_argument("--seeds", type=int, default=4, help="number of trajectories (default 4)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first_seed .. first_seed + seeds - 1")
    p.add_argument("--out", default="study", help="study directory: runs/seed-<s>/, report.md, figures")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per interval")
    p.add_argument("--report-only", action="store_true", help="do not run anything; report on finished seeds")
    p.add_argument("--parallel", type=int, default=None,
                   help="trajectories run at the same time (default: the preset's study.parallel; the study "
                        "preset says 2, which suits 2 cores since each role uses 1 thread)")
    p.set_defaults(fn=_cmd_study)
    p = sub.add_parser("probe", help="is the task in the zone of proximal development for the base model?")
    with_config(p)
    p.add_argument("--problems", type=int, default=100, help="evaluation problems sampled")
    p.add_argument("--samples", type=int, default=8, help="samples per problem")
    p.set_defaults(fn=_cmd_probe)
    verify.add_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
