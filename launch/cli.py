"""The ``constellation`` command (typer).

  constellation up [--preset tiny] [--set section.key=value ...] [--run-dir DIR] [--launcher local|ray]
  constellation monitor RUN_DIR [--refresh 1.0] [--once]
  constellation roles                                 (built-in and plugin implementations)
  constellation config [--preset tiny] [--set ...] [--reference [--markdown]]
  constellation table RUN_DIR                        (the pass@k table of a run, and its manifest)
  constellation export --tensorboard [--wandb] [--mlflow] RUN_DIR   (tracking logs rebuilt from run.sqlite)
  constellation study [--preset study] [--seeds 4] [--out study] [--report-only] [--sweep KEY=V1,V2] ...
  constellation control [--preset tiny] [--seeds 1] [--out control]   (positive controls)
  constellation probe [--preset tiny] [--problems 100] [--samples 8]   (is the task in the ZPD?)
  constellation verify --verifier math FILE.jsonl    (verify {gold, pred} lines)
  constellation --install-completion / --show-completion

Exit codes: 0 ok; 2 a usage or config error (one ``error:`` line, no
traceback); 3 ``probe`` found the task outside the zone or a ``control`` failed; ``up`` passes on the
supervisor's code (1 for a run that ended with an error, 130 after Ctrl-C or
SIGTERM). Each command only parses its
options and calls into an app module; the heavy ones (supervisor, monitor,
study, probe) are imported inside the command, so ``import launch.cli`` needs
neither torch nor sympy.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from constellation.protocol import config as config_mod
from constellation.runtime.registry import KINDS, describe, entries, shadowed_plugins
from launch import verify
from launch.errors import os_error_line

try:  # recent typer releases ship their own copy of click and raise its exceptions
    from typer._click import exceptions as click_errors
except ImportError:
    from click import exceptions as click_errors

app = typer.Typer(
    name="constellation",
    help="LLM self-training as a constellation of processes: generator, critic, verifier, coordinator, trainer.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


# -- shared options --------------------------------------------------------------------------

def _complete_preset(incomplete: str) -> list[str]:
    return [name for name in config_mod.preset_names() if name.startswith(incomplete)]


def _complete_override(incomplete: str) -> list[str]:
    """Config keys as ``section.key=`` until the ``=`` is typed; the value is the user's."""
    if "=" in incomplete:
        return []
    return [f"{key}=" for key, _, _ in config_mod.describe() if key.startswith(incomplete)]


Preset = Annotated[str, typer.Option(
    "--preset", help="preset name in constellation/presets, or a TOML path", autocompletion=_complete_preset)]
Overrides = Annotated[list[str] | None, typer.Option(
    "--set", metavar="SECTION.KEY=VALUE", autocompletion=_complete_override,
    help="override one config field (repeatable); the value is read as TOML, e.g. --set task.depths=[1,2]")]
RunDir = Annotated[Path, typer.Argument(help="a run directory (runs/<name>-<timestamp>)", show_default=False)]


def _error(message: object, console: Console | None = None) -> int:
    """Print ``error: <message>`` (stderr unless a console is given) and return exit code 2.

    soft_wrap keeps a long message on one line; escape keeps ``[1,2]`` in a
    message from being read as rich markup."""
    console = console or Console(stderr=True)
    console.print(f"[red]error:[/red] {escape(str(message))}", highlight=False, soft_wrap=True)
    return 2


MAX_SEEDS = 1000  # --seeds of study and control: trajectories, each a whole run
MAX_BOOTSTRAP = 1_000_000  # --bootstrap resamples


class Launcher(str, Enum):
    local = "local"
    ray = "ray"


# -- commands --------------------------------------------------------------------------------

@app.command()
def up(preset: Preset = "tiny", overrides: Overrides = None,
       run_dir: Annotated[Path | None, typer.Option(
           "--run-dir", help="run here instead of a new runs/<name>-<time>; an interrupted run there resumes")] = None,
       launcher: Annotated[Launcher | None, typer.Option(
           "--launcher", show_default="the config's launch.launcher (local)",
           help="local: roles are child processes here; ray: Ray actors on a running cluster (over tcp)")] = None,
       ray_address: Annotated[str | None, typer.Option(
           "--ray-address", help="with --launcher ray: the cluster's head host:port, or auto")] = None,
       ) -> None:
    """Run the whole constellation: prepare the base, start every role, run the rounds."""
    from launch.supervisor import SupervisorError
    from launch.up import up as run_up

    console = Console()
    chosen = [f'launch.launcher="{launcher.value}"'] if launcher else []
    chosen += ['run.transport="tcp"'] if launcher == Launcher.ray else []  # ipc cannot reach another host
    chosen += [f'launch.ray_address="{ray_address}"'] if ray_address else []
    try:
        code, run_dir = run_up(preset, chosen + (overrides or []), console, run_dir=run_dir)
    except (config_mod.ConfigError, SupervisorError) as e:
        raise typer.Exit(_error(e, console))
    except OSError as e:  # a read-only or full run directory: the path and the cause, nothing removed
        raise typer.Exit(_error(os_error_line(e, f"run directory {run_dir or 'under run.runs_dir'}"), console))
    console.print(f"run directory: {run_dir}")
    raise typer.Exit(code)


@app.command()
def monitor(run_dir: RunDir,
            refresh: Annotated[float, typer.Option("--refresh", help="seconds between redraws", min=0.05,
                                                   max=3600)] = 1.0,
            once: Annotated[bool, typer.Option("--once", help="print one frame and exit")] = False) -> None:
    """Live view of a run directory (run it next to [bold]constellation up[/bold])."""
    from launch.monitor import monitor as show

    if not run_dir.is_dir():
        raise typer.Exit(_error(f"no run directory at {run_dir}"))
    show(run_dir, refresh=refresh, once=once)


@app.command()
def roles() -> None:
    """List role implementations: built-in and plugin, with where each comes from."""
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


@app.command()
def config(preset: Preset = "tiny", overrides: Overrides = None,
           reference: Annotated[bool, typer.Option(
               "--reference", help="every config field with its default and help, instead")] = False,
           markdown: Annotated[bool, typer.Option("--markdown", help="with --reference: as a markdown table")] = False,
           ) -> None:
    """Print the resolved config as TOML (or, with --reference, every field with its help)."""
    if reference:
        print(config_reference_markdown() if markdown else
              "\n".join(f"{key} = {default}    # {help_text}" for key, default, help_text in config_mod.describe()))
        return
    from constellation.runtime.config_check import problems

    try:
        cfg = config_mod.load(preset, overrides or [])
    except config_mod.ConfigError as e:
        raise typer.Exit(_error(e))
    found = problems(cfg)  # every inconsistency between fields, one line each
    for problem in found:
        _error(problem)
    if found:
        raise typer.Exit(2)
    print(config_mod.to_toml(cfg))


def config_reference_markdown() -> str:
    """The configuration reference table of docs/configuration.md (a test keeps it in sync)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, help_text in config_mod.describe():
        rows.append(f"| `{key}` | `{default}` | {help_text.replace('|', '/')} |")
    return "\n".join(rows)


@app.command()
def table(run_dir: RunDir,
          plot: Annotated[Path | None, typer.Option("--plot", help="also draw the pass@k curves (base and each "
                                                     "round, k* marked) into this PNG file", show_default=False)
                          ] = None) -> None:
    """Print the pass@k table of a run (base and each round, with the crossover k*) and its manifest."""
    from launch.console import manifest_lines, pass_at_k_table

    if not (run_dir / "metrics.jsonl").is_file():
        raise typer.Exit(_error(f"no metrics.jsonl in {run_dir}"))
    console = Console()
    console.print(pass_at_k_table(run_dir))
    for line in manifest_lines(run_dir):
        console.print(line, highlight=False, markup=False)
    if plot is not None:
        from launch.run_figure import FigureError, plot_run

        try:
            console.print(f"pass@k curves: {plot_run(run_dir, plot)}", highlight=False)
        except (FigureError, OSError) as e:
            raise typer.Exit(_error(e))


@app.command()
def export(path: Annotated[Path, typer.Argument(help="a run directory, or a study directory (every run below it)",
                                                show_default=False)],
           tensorboard: Annotated[bool, typer.Option("--tensorboard", help="rebuild RUN_DIR/tensorboard")] = False,
           wandb: Annotated[bool, typer.Option("--wandb", help="log to W&B (the run's tracking.wandb_mode)")] = False,
           mlflow: Annotated[bool, typer.Option("--mlflow", help="log to MLflow (the run's tracking.mlflow_uri)")
                             ] = False) -> None:
    """Rebuild a finished run's tracking logs (TensorBoard, W&B, MLflow) from its run.sqlite."""
    from launch.export import ExportError, export as run_export

    chosen = {name for name, on in (("tensorboard", tensorboard), ("wandb", wandb), ("mlflow", mlflow)) if on}
    try:
        done = run_export(path, chosen)
    except (ExportError, config_mod.ConfigError) as e:
        raise typer.Exit(_error(e))
    for run_dir, n in done:
        print(f"{run_dir}: {n} events -> {', '.join(sorted(chosen))}")


@app.command()
def study(preset: Preset = "study", overrides: Overrides = None,
          seeds: Annotated[int, typer.Option("--seeds", help="number of trajectories", min=1, max=MAX_SEEDS)] = 4,
          first_seed: Annotated[int, typer.Option(
              "--first-seed", help="seeds are first_seed .. first_seed + seeds - 1")] = 0,
          out: Annotated[Path, typer.Option("--out", help="study directory: runs/seed-<s>/, report.md, figures")
                         ] = Path("study"),
          bootstrap: Annotated[int, typer.Option("--bootstrap", help="bootstrap resamples per interval", min=1,
                                                 max=MAX_BOOTSTRAP)] = 1000,
          report_only: Annotated[bool, typer.Option(
              "--report-only", help="do not run anything; report on finished seeds")] = False,
          parallel: Annotated[int | None, typer.Option(
              "--parallel", show_default="the preset's study.parallel", min=1, max=64,
              help="trajectories run at the same time (the study preset says 2, which suits 2 cores: "
                   "each role uses 1 thread)")] = None,
          controls: Annotated[bool, typer.Option(
              "--controls/--no-controls", help="run the positive controls of every seed (launch/control.py)")] = True,
          sweep: Annotated[str | None, typer.Option(
              "--sweep", metavar="SECTION.KEY=V1,V2,...",
              help="run the whole study once per value and report them side by side, with figures")] = None,
          ) -> None:
    """Several seeded trajectories and a report with bootstrap intervals and figures."""
    from constellation.runtime.config_check import check_config
    from constellation.runtime.preflight import preflight
    from launch.inprocess import CONTROL_ROLES
    from launch.study import run_study, seed_overrides
    from launch.study_report import StudyError
    from launch.supervisor import SupervisorError

    from launch.study_sweep import parse_sweep, run_sweep

    console = Console()
    options = dict(first_seed=first_seed, n_boot=bootstrap, report_only=report_only, parallel=parallel,
                   controls=controls)
    try:
        key, values = parse_sweep(sweep) if sweep else ("", [""])
        for value in values:  # every value's config and task, before any trajectory starts
            chosen = [*(overrides or []), *([f"{key}={value}"] if sweep else [])]
            cfg = config_mod.load(preset, seed_overrides(chosen, first_seed))
            (check_config if report_only else preflight)(cfg)
            if controls and not report_only:
                _hosts(cfg, CONTROL_ROLES, " or --no-controls (then constellation control with such an impl)")
        if sweep:
            run_sweep(preset, sweep, seeds, overrides or [], out, console, **options)
        else:
            run_study(preset, seeds, overrides or [], out, console, **options)
    except (config_mod.ConfigError, SupervisorError, StudyError) as e:
        raise typer.Exit(_error(e, console))
    except OSError as e:
        raise typer.Exit(_error(os_error_line(e), console))


def _hosts(cfg: config_mod.Config, roles: tuple[str, ...], also: str = "") -> None:
    """ConfigError when this process cannot host ``roles`` in-process (a role's own interpreter)."""
    from launch.inprocess import hosting_problem

    problem = hosting_problem(cfg, roles)
    if problem is not None:
        raise config_mod.ConfigError(problem + also)


@app.command()
def control(preset: Preset = "tiny", overrides: Overrides = None,
            seeds: Annotated[int, typer.Option("--seeds", help="number of seeds", min=1, max=MAX_SEEDS)] = 1,
            first_seed: Annotated[int, typer.Option("--first-seed", help="seeds are first_seed ..")] = 0,
            out: Annotated[Path, typer.Option("--out", help="directory: seed-<s>/, report.md")] = Path("control"),
            bootstrap: Annotated[int, typer.Option("--bootstrap", help="bootstrap resamples per interval", min=1,
                                                   max=MAX_BOOTSTRAP)] = 1000,
            ) -> None:
    """Positive controls: can the trainer learn from oracle data, can selection matter? Exit 0 both pass, 3 not."""
    from constellation.runtime.preflight import preflight
    from launch.control import PASSES, run_controls
    from launch.inprocess import CONTROL_ROLES
    from launch.study import seed_overrides
    from launch.study_report import StudyError

    console = Console()
    try:
        cfg = config_mod.load(preset, seed_overrides(overrides or [], first_seed))
        preflight(cfg)  # before the base is built
        _hosts(cfg, CONTROL_ROLES)
        report = run_controls(preset, seeds, overrides or [], out, console, first_seed=first_seed, n_boot=bootstrap)
    except (config_mod.ConfigError, StudyError) as e:
        raise typer.Exit(_error(e, console))
    raise typer.Exit(0 if all(v == PASSES for v in report.findings.values()) else 3)


@app.command()
def probe(preset: Preset = "tiny", overrides: Overrides = None,
          problems: Annotated[int, typer.Option("--problems", help="evaluation problems sampled", min=1,
                                                  max=config_mod.MAX_EVAL_PROBLEMS)] = 100,
          samples: Annotated[int, typer.Option("--samples", help="samples per problem", min=1,
                                               max=config_mod.MAX_SAMPLES)] = 8,
          ) -> None:
    """Is the task in the zone of proximal development for the base model? Exit 0 in the zone, 3 outside."""
    from launch.inprocess import PROBE_ROLES
    from launch.probe import probe as run_probe

    from constellation.runtime.preflight import preflight

    console = Console()
    try:
        cfg = config_mod.load(preset, overrides or [])
        split = preflight(cfg)  # values, paths and task files, before the base is built
        _hosts(cfg, PROBE_ROLES)
    except config_mod.ConfigError as e:
        raise typer.Exit(_error(e, console))
    result = run_probe(cfg, n_problems=problems, samples=samples, console=console, split=split)
    raise typer.Exit(0 if result.zone == "in" else 3)


class VerifierName(str, Enum):
    math = "math"


@app.command("verify")
def verify_file(
        file: Annotated[str, typer.Argument(
            help="JSONL input, one {\"gold\": ..., \"pred\": ...} object per line ('-' = stdin)", show_default=False)],
        verifier: Annotated[VerifierName, typer.Option("--verifier", help="which verifier")] = VerifierName.math,
        jobs: Annotated[int, typer.Option("--jobs", help="worker processes checking in parallel", min=1, max=1024)] = 1,
        timeout: Annotated[float, typer.Option("--timeout", help="hard deadline per answer in seconds", min=0.001,
                                               max=3600)] = 1.0,
) -> None:
    """Verify a JSONL file of {gold, pred} answers: one verdict line each on stdout, a summary on stderr."""
    raise typer.Exit(verify.run(file, jobs=jobs, timeout=timeout))


# -- entry point -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]) and return its exit code.

    Click runs with standalone_mode=False so that the code comes back here
    instead of through sys.exit; usage errors are printed as one line."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    if not args:  # no command: the help, with a usage error's exit code
        command.main(args=["--help"], prog_name="constellation", standalone_mode=False)
        return 2
    stdout = sys.stdout
    try:
        code = command.main(args=args, prog_name="constellation", standalone_mode=False)
    except click_errors.UsageError as e:  # unknown command or option, missing argument, bad value
        where = e.ctx.command_path if e.ctx else "constellation"
        return _error(f"{e.format_message()} (see: {where} --help)")
    except click_errors.ClickException as e:
        return _error(e.format_message())
    except SystemExit as e:  # --show-completion and --install-completion end with sys.exit
        if sys.stdout is not stdout:  # typer swapped it after a broken pipe: output piped into `head`
            return 0
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
