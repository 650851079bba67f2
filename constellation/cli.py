"""The ``constellation`` command.

  constellation up [--preset tiny] [--set section.key=value ...]
  constellation monitor RUN_DIR
  constellation roles
  constellation config [--preset tiny] [--set ...]   (print the resolved config)
  constellation table RUN_DIR                        (the pass@k table of a run)
  constellation verify --verifier math FILE.jsonl    (verify {gold, pred} lines)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from constellation import config as config_mod
from constellation import verify_cli
from constellation.registry import ROLES, TASKS


def _cmd_up(args: argparse.Namespace) -> int:
    from launch.supervisor import SupervisorError, up

    console = Console()
    try:
        code, run_dir = up(args.preset, args.set, console)
    except (config_mod.ConfigError, SupervisorError) as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    console.print(f"run directory: {run_dir}")
    return code


def _cmd_monitor(args: argparse.Namespace) -> int:
    from constellation.monitor import monitor

    if not Path(args.run_dir).is_dir():
        print(f"error: no run directory at {args.run_dir}", file=sys.stderr)
        return 2
    monitor(Path(args.run_dir), refresh=args.refresh, once=args.once)
    return 0


def _cmd_roles(args: argparse.Namespace) -> int:
    table = Table(title="role implementations (impl = name, or 'package.module:Class')")
    for col in ("role", "impl", "class", "what"):
        table.add_column(col)
    for role, impls in ROLES.items():
        for name, (path, what) in impls.items():
            table.add_row(role, name, path, what)
    for name, (path, what) in TASKS.items():
        table.add_row("task", name, path, what)
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="constellation", description="LLM self-training as a constellation of processes")
    sub = ap.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--preset", default="tiny", help="preset name in launch/presets or a TOML path (default: tiny)")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one config field (repeatable); the value is read as TOML")

    p = sub.add_parser("up", help="run the whole constellation")
    with_config(p)
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
    verify_cli.add_parser(sub)
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
