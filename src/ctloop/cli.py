"""The `ctloop` command: parse options, configure logging, render progress and results.

Errors that a user can fix (bad config, bad data, a refused gate) end as one line on stderr
and a specific exit code; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ctloop import loop
from ctloop.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from ctloop.data import DataError
from ctloop.ensemble import ENSEMBLE

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_GATE_REJECTED = 3
# `ctloop monitor`: 0 = no action (drift may still be reported), 4 = retrain warranted (the
# champion is, or very probably is, doing worse; launched with --retrain), 5 = alert: the data
# looks broken (too few rows, features missing/empty) so retraining is vetoed, 6 = no data in
# the window. With --every the code is that of the last job.
EXIT_RETRAIN = 4  # monitor: retrain warranted (launched with --retrain)
EXIT_ALERT = 5
EXIT_NO_DATA = 6

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Continuous training for tabular models, centred on MLflow.")
console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)
_state = {"debug": False}

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")]
StartOption = Annotated[str | None, typer.Option(help="Data window start (time column).")]
EndOption = Annotated[str | None, typer.Option(help="Data window end, exclusive.")]


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "botocore", "numexpr"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if not debug:  # library deprecation chatter is not the user's problem
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(mlflow|joblib|sklearn)")


def _load(config: Path, start: str | None = None, end: str | None = None) -> Config:
    # MLproject passes "" for an unset window bound.
    return load_config(config).with_window(start or None, end or None)


def _trial_progress() -> tuple[Progress, callable]:
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    task = progress.add_task("training trials", total=None)

    def update(done: int, total: int, trial) -> None:
        progress.update(task, total=total, completed=done,
                        description=f"trained {trial.name}" if trial else "training trials")

    return progress, update


def _render_table_choices(result) -> None:
    """Say how the table was read: the task and why, and every column left out or noted."""
    out.print(f"task: {result.task} - {result.task_reason}", highlight=False)
    for column, why in result.excluded.items():
        out.print(f"  not used: {column} ({why})", highlight=False)
    for column, note in result.notes.items():
        out.print(f"  {column}: {note}", highlight=False)


RANKED_ROWS = 10  # the rest are child runs of the training run in the MLflow UI


def _render_ranking(result) -> None:
    metric = result.primary_metric
    _render_table_choices(result)
    others = [m for m in (result.trials[0].metrics if result.trials else {})
              if m not in (metric, "fit_seconds", "threshold")]
    shown = [metric, *others[:4]]
    scored_on = "out of fold" if result.cv_folds else "validation"
    table = Table(title=f"Candidates ranked by {metric} ({scored_on}) - run {result.run_id}")
    for column in ("rank", "trial", *shown, "rounds", "fit s", "model", "run id"):
        table.add_column(column, justify="left" if column in ("trial", "run id") else "right")
    for rank, trial in enumerate(result.trials[:RANKED_ROWS], 1):
        m = trial.metrics
        table.add_row(str(rank), trial.name, *(f"{m.get(k, float('nan')):.4f}" for k in shown),
                      str(trial.params.get("n_rounds", "")), f"{m['fit_seconds']:.1f}",
                      "logged" if trial.model_uri else "", trial.run_id)
    out.print(table)
    if len(result.trials) > RANKED_ROWS:
        out.print(f"... and {len(result.trials) - RANKED_ROWS} more trials (child runs of "
                  f"{result.run_id})", highlight=False)
    why = ("the time budget (training.time_budget)" if result.stopped_by == "time_budget"
           else "the trial limit (training.trials, candidates.<family>.trials)")
    ranked = (f"{result.cv_folds}-fold cross-validation on the training + validation rows "
              f"({result.cv_reason})" if result.cv_folds else "the validation split")
    out.print(f"search: {result.searched} trials in {result.search_seconds:.1f} s, "
              f"stopped by {why}; ranked by {ranked}", highlight=False)
    for trial in result.trials:
        if trial.family == ENSEMBLE:
            out.print(f"{trial.name}: a weighted average of {trial.params['members']} "
                      "(chosen on the out-of-fold scores)", highlight=False)
    out.print(f"rows: {result.rows}  window: {result.window[0]} .. {result.window[1]}  "
              f"wall time: {result.seconds:.1f} s")


@app.command()
def train(config: ConfigOption = DEFAULT_CONFIG_PATH, start: StartOption = None,
          end: EndOption = None) -> None:
    """Train all candidates; one parent run per invocation, a child run per trial."""
    cfg = _load(config, start, end)
    progress, update = _trial_progress()
    with loop.training_workers(cfg), progress:  # the workers first: the bar runs a thread
        result = loop.train(cfg, on_progress=update)
    _render_ranking(result)


def _render_decision(decision) -> None:
    verdict = "[green]PROMOTED[/green]" if decision.promoted else "[red]REJECTED[/red]"
    against = (f"against champion v{decision.champion_version}" if decision.champion_version
               else "first model: floors and model tests only")
    out.print(f"{decision.name} v{decision.version}: {verdict} ({against})")
    table = Table(show_header=True)
    for column in ("gate", "verdict", "detail"):
        table.add_column(column)
    for gate in decision.gates:
        table.add_row(gate.name, "pass" if gate.passed else "[red]FAIL[/red]", gate.detail)
    out.print(table)
    if decision.timings:
        out.print("timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in decision.timings.items()))


def _exit_for(decision) -> None:
    if not decision.promoted:
        console.print(f"gate rejected {decision.name} v{decision.version}: failed "
                      f"{', '.join(decision.failed)}", highlight=False)
        raise typer.Exit(EXIT_GATE_REJECTED)


TriggerOption = Annotated[str, typer.Option(help="Why this ran (recorded on the version).")]


@app.command()
def select(config: ConfigOption = DEFAULT_CONFIG_PATH,
           run_id: Annotated[str | None, typer.Option(help="Training run (default: latest).")]
           = None, trigger: TriggerOption = "manual") -> None:
    """Gate the best trial against the champion, register it, promote it if it passes."""
    decision = loop.select(_load(config), run_id or None, trigger=trigger)
    _render_decision(decision)
    _exit_for(decision)


@app.command()
def run(config: ConfigOption = DEFAULT_CONFIG_PATH, start: StartOption = None,
        end: EndOption = None, trigger: TriggerOption = "manual") -> None:
    """Train then select (the MLproject `main` entry point)."""
    cfg = _load(config, start, end)
    progress, update = _trial_progress()
    with loop.training_workers(cfg), progress:
        result = loop.train(cfg, on_progress=update, extra_tags={"ctloop.trigger": trigger})
    _render_ranking(result)
    decision = loop.select(cfg, result.run_id, trigger=trigger)
    _render_decision(decision)
    _exit_for(decision)


@app.command()
def promote(version: Annotated[int, typer.Option("--version", help="Version to promote.")],
            config: ConfigOption = DEFAULT_CONFIG_PATH,
            force: Annotated[bool, typer.Option(help="Skip the gates (recorded).")] = False,
            ) -> None:
    """Promote an existing version by hand; still gated unless --force."""
    decision = loop.promote(_load(config), version, force=force)
    _render_decision(decision)
    _exit_for(decision)


@app.command()
def rollback(config: ConfigOption = DEFAULT_CONFIG_PATH) -> None:
    """Make the previous champion the champion again (recorded on both versions)."""
    old, new = loop.rollback(_load(config))
    out.print(f"champion rolled back: v{old} -> v{new}")


@app.command()
def status(config: ConfigOption = DEFAULT_CONFIG_PATH) -> None:
    """What is serving and why: the champion's lineage and evidence, and every version."""
    report = loop.status(_load(config))
    champion = report["champion"]
    out.print(f"[bold]{report['name']}[/bold] on {report['tracking_uri']}")
    if champion is None:
        out.print("no champion yet: run `ctloop run`")
    else:
        table = Table(title=f"champion v{champion['version']} ({champion['model_uri']})",
                      show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in champion.items():
            table.add_row(key, str(value))
        out.print(table)
        monitor = report.get("last_monitor")
        if monitor:
            out.print(f"last monitor run {monitor['run_id']}: "
                      f"{monitor['tags'].get('ctloop.decision', monitor['status'])}")
    versions = Table(title="versions")
    for column in ("version", "aliases", "stage", "decision", "failed gates", "trigger"):
        versions.add_column(column)
    for mv in report["versions"]:
        versions.add_row(str(mv.version), ", ".join(mv.aliases), mv.stage,
                         mv.tags.get("ctloop.decision", ""),
                         mv.tags.get("ctloop.failed_gates", ""), mv.tags.get("ctloop.trigger", ""))
    out.print(versions)


class DeployTarget(StrEnum):
    local = "local"
    sagemaker = "sagemaker"


@app.command()
def serve(config: ConfigOption = DEFAULT_CONFIG_PATH,
          host: Annotated[str | None, typer.Option(help="Bind address [serve.host].")] = None,
          port: Annotated[int | None, typer.Option(help="Port [serve.port].")] = None,
          workers: Annotated[int | None, typer.Option(
              help="Worker processes; 0 = one per core [serve.workers].")] = None) -> None:
    """Serve the champion on MLflow's scoring protocol, following the champion alias."""
    loop.serve(_load(config), host, port, workers,
               announce=lambda line: console.print(line, highlight=False))


@app.command()
def predict(input: Annotated[Path, typer.Option("--input", "-i",
                                                help="CSV (.gz/.zip/.bz2/.xz too) or Parquet.")],
            output: Annotated[Path, typer.Option("--output", "-o", help=".csv or .parquet")],
            config: ConfigOption = DEFAULT_CONFIG_PATH) -> None:  # fmt: skip
    """Score a CSV/Parquet file with the champion: input columns + probability and label."""
    cfg = _load(config)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                        console=console)  # fmt: skip
    task = progress.add_task("scoring", total=1.0)

    def update(rows: int, fraction: float) -> None:
        progress.update(task, completed=fraction, description=f"scored {rows:,} rows")

    with progress:
        result = loop.predict_file(cfg, str(input), str(output), on_progress=update)
    out.print(f"scored {result['rows']:,} rows with {cfg.name} version {result['version']} "
              f"-> {result['output']}")


@app.command()
def deploy(config: ConfigOption = DEFAULT_CONFIG_PATH,
           target: Annotated[DeployTarget, typer.Option(
               help="local scoring server, or the SageMaker endpoint in deploy.sagemaker.")
           ] = DeployTarget.local,
           rollback: Annotated[bool, typer.Option(
               "--rollback", help="SageMaker: go back to the previously deployed version.")
           ] = False) -> None:  # fmt: skip
    """Deploy the champion: a local scoring server, or a SageMaker endpoint (blue/green)."""
    cfg = _load(config)
    if target is DeployTarget.local:
        if rollback:
            raise typer.BadParameter("--rollback applies to --target sagemaker; locally, "
                                     "`ctloop rollback` moves the champion the server follows")
        result = loop.deploy_local(cfg)
        if result is not None:
            out.print(result)
        return
    result = loop.deploy_sagemaker(cfg, rollback=rollback)
    if result.action == "unchanged":
        out.print(f"SageMaker endpoint {result.endpoint} already serves v{result.version}")
        return
    was = f" (was v{result.previous_version})" if result.previous_version is not None else ""
    out.print(f"SageMaker endpoint {result.endpoint} {result.action}: serves "
              f"{cfg.name} v{result.version}{was} in {result.seconds:.0f} s; data capture to "
              f"{result.capture_uri}")  # fmt: skip


_MONITOR_EXIT = {"no_action": EXIT_OK, "retrain": EXIT_RETRAIN, "alert": EXIT_ALERT,
                 "no_data": EXIT_NO_DATA}  # fmt: skip


def _seconds(text: str) -> float:
    """'10m', '30s', '1h', '90' (seconds) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        value = float(text[:-1]) * units[text[-1]] if text[-1:] in units else float(text)
    except (ValueError, IndexError):
        raise typer.BadParameter(f"{text!r} is not a duration like 10m, 30s or 1h") from None
    if value <= 0:
        raise typer.BadParameter("the interval must be positive")
    return value


@app.command()
def monitor(
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    current: Annotated[str | None, typer.Option(
        help="Capture folder or s3:// prefix (default serve.capture.directory), or a "
             "CSV/Parquet file.")] = None,
    since: Annotated[str | None, typer.Option(
        help="Window start, ISO time (UTC); default: when the champion was registered.")] = None,
    until: Annotated[str | None, typer.Option(help="Window end, exclusive.")] = None,
    retrain: Annotated[bool, typer.Option(
        "--retrain", help="When a retrain is warranted, rerun the MLflow project.")] = False,
    ground_truth: Annotated[str | None, typer.Option(
        help="Ground-truth folder/prefix (Model Monitor format).")] = None,
    every: Annotated[str | None, typer.Option(
        help="Repeat in the foreground every interval (e.g. 10m) until Ctrl-C.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")]
    = False,
) -> None:  # fmt: skip
    """Is the champion doing worse? Realised or estimated metrics vs its holdout, drift as the
    explanation. Exit 0 no action, 4 retrain warranted, 5 alert, 6 no data."""
    cfg = _load(config)

    def show(result) -> None:
        if as_json:
            import json

            out.print_json(json.dumps(result.to_dict(), default=str))
        else:
            out.print(result.summary(), highlight=False, soft_wrap=True)

    if every is None:
        result = loop.monitor(cfg, current, since, until, retrain, ground_truth)
        show(result)
        raise typer.Exit(_MONITOR_EXIT[result.decision])
    interval = _seconds(every)
    last = {"code": EXIT_OK}

    def on_result(result, error) -> None:
        if error is not None:
            console.print(f"[red]monitor failed:[/red] {error}", highlight=False, soft_wrap=True)
            last["code"] = EXIT_ERROR
            return
        show(result)
        last["code"] = _MONITOR_EXIT[result.decision]

    console.print(f"monitoring {cfg.name} every {every}; Ctrl-C to stop", highlight=False)
    try:
        loop.monitor_every(cfg, interval, on_result, current, since, retrain, ground_truth)
    except KeyboardInterrupt:
        console.print("stopped", highlight=False)
    raise typer.Exit(last["code"])


@app.command()
def demo(config: ConfigOption = DEFAULT_CONFIG_PATH,
         keep_serving: Annotated[bool, typer.Option(help="Leave the server running.")] = False,
         ) -> None:
    """The whole loop on the flights data, narrated (what `make run` runs)."""
    from ctloop import demo as demo_module

    started = time.monotonic()

    def narrate(stage: str, message: str) -> None:
        elapsed = time.monotonic() - started
        console.print(f"[dim]{elapsed:6.1f}s[/dim] [bold cyan]{stage:>8}[/bold cyan] {message}",
                      highlight=False)

    report = demo_module.run_demo(_load(config), narrate, keep_serving=keep_serving)
    facts = report.facts
    v1, v2 = facts["v1"], facts.get("v2")
    closed = v2 is not None and v2["promoted"]
    table = Table(title="ctloop demo: " + ("the loop closed" if closed else
                                           "no new champion was needed" if v2 is None else
                                           "the retrained challenger was rejected"))
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    name = report.model_name
    rows = [("first champion", f"v{v1['version']} ({v1['trial']}), trained on Jan-Mar, holdout "
                               f"roc_auc {v1['holdout'].get('roc_auc', float('nan')):.3f} "
                               "(late March)")]
    for window in facts["windows"]:
        m = window["monitor"]
        rows.append((f"{window['months']} traffic", _monitor_line(m)))
        if m["decision"] == "retrain" and m.get("retrain_window"):
            rows.append(("retrain window", " .. ".join(m["retrain_window"])))
            if v2 is not None:
                auc = v2["holdout"].get("roc_auc", float("nan"))
                old_auc = v2["champion_holdout"].get("roc_auc", float("nan"))
                verdict = "promoted" if v2["promoted"] else f"rejected ({v2['failed_gates']})"
                rows.append(("retrained", f"v{v2['version']} {verdict}: roc_auc {auc:.3f} vs "
                             f"v{v1['version']} {old_auc:.3f} on the same recent holdout "
                             f"(improvement 95% CI {v2['interval'].get('lower', 0):+.3f} .. "
                             f"{v2['interval'].get('upper', 0):+.3f})"))
            if "drift_to_serving_s" in facts:
                rows.append(("retrain decision -> new champion serving",
                             f"{facts['drift_to_serving_s']} s"))
    replays = [w["replay"] for w in facts["windows"]]
    rows += [
        ("replayed", " + ".join(f"{r['rows']:,}" for r in replays) + " rows, failed requests: "
                     f"{sum(r['failed'] for r in replays)}"),
        ("step times (s)", ", ".join(f"{k} {v}" for k, v in report.steps.items())),
        ("server", facts["serving"]),
        ("MLflow UI", f"mlflow ui --backend-store-uri {report.tracking_uri}  (experiments "
                      f"'{name}' and '{name}-monitoring', registered model '{name}')"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    out.print(table)


def _monitor_line(m: dict) -> str:
    """A monitor result (as a dict): the champion's realised metrics, the action, the drift."""
    checks = m.get("performance", {}).get("realised", [])
    figures = ", ".join(f"{c['metric']} {c['observed']:.3f} (holdout {c['expected']:.3f}, "
                        f"lower bound of the drop {c['lower']:+.3f} vs tolerance "
                        f"{c['tolerance']:g})" for c in checks) or "no labelled metrics"
    action = (f"retrain ({m['rule']})" if m["decision"] == "retrain"
              else m["decision"].replace("_", " "))  # fmt: skip
    return (f"v{m['model_version']}: {figures} -> {action}; {m['drift_share']:.0%} of features "
            f"drifted{': ' + ', '.join(m['drifted_columns']) if m['drifted_columns'] else ''}")


def main() -> None:
    """Console-script entry point: map known failures to one stderr line and an exit code."""
    try:
        # Without standalone mode click *returns* the code of a `typer.Exit(code)`.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
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
    except typer.TyperException as exc:  # usage errors (typer vendors its own click)
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            console.print(f"error: {exc.format_message()}", highlight=False)
        sys.exit(exc.exit_code)
    except Exception as exc:  # anything unexpected: still one line unless --debug
        if _state["debug"]:
            raise
        console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}", highlight=False,
                      soft_wrap=True)
        sys.exit(EXIT_ERROR)
