"""The `ctloop` command: parse options, configure logging, render progress and results.

Errors that a user can fix (bad config, bad data, a refused gate) end as one line on stderr
and a specific exit code; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ctloop import loop
from ctloop.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from ctloop.data import DataError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_GATE_REJECTED = 3

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Continuous training for tabular models, centred on MLflow.")  # fmt: skip
console = Console(stderr=True)
out = Console()
_state = {"debug": False}

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")]
StartOption = Annotated[str | None, typer.Option(help="Data window start (time column).")]
EndOption = Annotated[str | None, typer.Option(help="Data window end, exclusive.")]


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:  # fmt: skip
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "botocore", "numexpr"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _load(config: Path, start: str | None = None, end: str | None = None) -> Config:
    # MLproject passes "" for an unset window bound.
    return load_config(config).with_window(start or None, end or None)


def _trial_progress() -> tuple[Progress, callable]:
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=console)  # fmt: skip
    task = progress.add_task("training trials", total=None)

    def update(done: int, total: int, trial) -> None:
        progress.update(task, total=total, completed=done,
                        description=f"trained {trial.name}" if trial else "training trials")

    return progress, update


def _render_ranking(result) -> None:
    metric = result.primary_metric
    table = Table(title=f"Candidates ranked by {metric} (validation) - run {result.run_id}")
    for column in ("rank", "trial", metric, "pr_auc", "log_loss", "f1", "fit s", "run id"):
        table.add_column(column, justify="right" if column not in ("trial", "run id") else "left")
    for rank, trial in enumerate(result.trials, 1):
        m = trial.metrics
        table.add_row(str(rank), trial.name, f"{m[metric]:.4f}", f"{m['pr_auc']:.4f}",
                      f"{m['log_loss']:.4f}", f"{m['f1']:.4f}", f"{m['fit_seconds']:.1f}",
                      trial.run_id)  # fmt: skip
    out.print(table)
    out.print(f"rows: {result.rows}  window: {result.window[0]} .. {result.window[1]}  "
              f"wall time: {result.seconds:.1f} s")  # fmt: skip


@app.command()
def train(config: ConfigOption = DEFAULT_CONFIG_PATH, start: StartOption = None,
          end: EndOption = None) -> None:  # fmt: skip
    """Train all candidates; one parent run per invocation, a child run per trial."""
    cfg = _load(config, start, end)
    progress, update = _trial_progress()
    with progress:
        result = loop.train(cfg, on_progress=update)
    _render_ranking(result)


def main() -> None:
    """Console-script entry point: map known failures to one stderr line and an exit code."""
    try:
        app(standalone_mode=False)
    except (ConfigError, DataError, loop.UserError) as exc:
        if _state["debug"]:
            raise
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_ERROR)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        console.print("aborted", style="red")
        sys.exit(130)
    except Exception as exc:  # click usage errors and anything unexpected
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if _state["debug"]:
            raise
        console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}", highlight=False,
                      soft_wrap=True)  # fmt: skip
        sys.exit(EXIT_ERROR)
