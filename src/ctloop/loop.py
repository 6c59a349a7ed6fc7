"""CT orchestration: the only place that chains stages, passing plain values between them."""

from __future__ import annotations

from typing import Any

from ctloop import deploy as deploy_stage
from ctloop import registry, tracking
from ctloop import select as select_stage
from ctloop import train as train_stage
from ctloop.config import Config


class UserError(RuntimeError):
    """A refusal the user can act on (no training run yet, no champion, ...)."""


def train(cfg: Config, on_progress=None, extra_tags: dict[str, str] | None = None):
    tracking.configure()
    return train_stage.train(cfg, on_progress=on_progress, extra_tags=extra_tags)


def training_workers(cfg: Config):
    """The worker processes for `cfg`'s trainings, for a caller to open before it starts a
    thread (they are forked only from a process with one thread; see `ctloop.workers`)."""
    return train_stage.local_workers(cfg)


def select(cfg: Config, run_id: str | None = None, trigger: str = "manual"):
    """Gate the best trial of the given (or latest) training run; returns the Decision."""
    tracking.configure()
    run_id = run_id or tracking.latest_training_run(cfg.name)
    if run_id is None:
        raise UserError(f"no finished training run in experiment '{cfg.name}'; "
                        "run `ctloop train` first")
    try:
        return select_stage.select(cfg, run_id, trigger=trigger)
    except select_stage.SelectionError as exc:
        raise UserError(str(exc)) from None


def run(cfg: Config, on_progress=None, trigger: str = "manual"):
    """Train then select: the MLproject `main` entry point. Returns (TrainResult, Decision)."""
    result = train(cfg, on_progress=on_progress, extra_tags={"ctloop.trigger": trigger})
    return result, select(cfg, result.run_id, trigger=trigger)


def promote(cfg: Config, version: int, force: bool = False):
    tracking.configure()
    try:
        return select_stage.promote_version(cfg, version, force, trigger="manual promote"
                                            + (" (forced)" if force else ""))
    except select_stage.SelectionError as exc:
        raise UserError(str(exc)) from None
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            raise UserError(f"{cfg.name} has no version {version}") from None
        raise


def rollback(cfg: Config) -> tuple[int, int]:
    tracking.configure()
    try:
        return select_stage.rollback(cfg)
    except select_stage.SelectionError as exc:
        raise UserError(str(exc)) from None


def status(cfg: Config) -> dict[str, Any]:
    """What is serving and why: the champion's lineage from data window to gate evidence."""
    tracking.configure()
    champion = registry.champion(cfg.name)
    versions = registry.versions(cfg.name)
    report: dict[str, Any] = {"name": cfg.name, "tracking_uri": tracking.tracking_uri(),
                              "champion": None, "versions": versions}
    if champion is None:
        return report
    tags = champion.tags
    report["champion"] = {
        "version": champion.version,
        "stage": champion.stage,
        "since": tags.get("ctloop.champion_since", ""),
        "task": tags.get("ctloop.task", "binary"),
        "decision": tags.get("ctloop.decision", ""),
        "gates": tags.get("ctloop.gates", ""),
        "compared_with": tags.get("ctloop.compared_with", ""),
        "holdout_metrics": tags.get("ctloop.holdout_metrics", ""),
        "interval": tags.get("ctloop.interval", ""),
        "trigger": tags.get("ctloop.trigger", ""),
        "forced": tags.get("ctloop.forced", "false"),
        "data_source": tags.get("ctloop.data_source", ""),
        "window": f"{tags.get('ctloop.window_start', '?')} .. {tags.get('ctloop.window_end', '?')}",
        "training_run_id": tags.get("ctloop.training_run_id", ""),
        "trial_run_id": tags.get("ctloop.trial_run_id", ""),
        "config_hash": tags.get("ctloop.config_hash", ""),
        "git_commit": tags.get("ctloop.git_commit", ""),
        "decision_record": tags.get("ctloop.decision_record", ""),
        "model_uri": registry.champion_uri(cfg.name),
    }
    report["last_monitor"] = tracking.last_run_summary(cfg.monitoring_experiment)
    return report


def deploy_sagemaker(cfg: Config, rollback: bool = False) -> deploy_stage.DeployResult:
    """Put the champion on the SageMaker endpoint blue/green; with `rollback`, the version the
    endpoint served before the current one (read from the endpoint's tags)."""
    tracking.configure()
    settings = cfg.deploy.sagemaker
    try:
        endpoint = deploy_stage.endpoint_name(cfg.name, settings)
        if rollback:
            live = deploy_stage.deployed(endpoint, settings)
            if live is None:
                raise UserError(f"SageMaker endpoint {endpoint} does not exist; nothing to roll "
                                "back")  # fmt: skip
            if live.previous_version is None:
                raise UserError(f"endpoint {endpoint} records no previous deployment to roll "
                                "back to")  # fmt: skip
            try:
                target = registry.get_version(cfg.name, live.previous_version)
            except Exception as exc:
                raise UserError(f"{cfg.name} version {live.previous_version}, deployed before, "
                                f"is no longer in the registry ({exc})") from None  # fmt: skip
        else:
            target = registry.champion(cfg.name)
            if target is None:
                raise UserError(f"{cfg.name} has no champion to deploy; run `ctloop run` first")
        release = deploy_stage.Release(cfg.name, target.version, target.uri)
        result = deploy_stage.deploy(release, settings, endpoint)
    except deploy_stage.DeployError as exc:
        raise UserError(str(exc)) from exc
    if result.action != "unchanged":
        registry.set_tags(cfg.name, target.version, {
            "ctloop.sagemaker.endpoint": f"{settings.region}/{endpoint}",
            "ctloop.sagemaker.deployed_at": result.deployed_at,
        })  # fmt: skip
    return result


# -- local serving (the serve stage is imported when used: uvicorn/pyarrow cost start-up time)
def serve(cfg: Config, host: str | None = None, port: int | None = None,
          workers: int | None = None, announce=None) -> None:
    """Run the scoring server for the champion in this process until interrupted."""
    from ctloop.serve import server

    tracking.configure()
    try:
        server.run(cfg, host or cfg.serve.host, port or cfg.serve.port,
                   cfg.serve.workers if workers is None else workers, announce=announce)
    except server.ServeError as exc:
        raise UserError(str(exc)) from None


def predict_file(cfg: Config, source: str, target: str, on_progress=None) -> dict[str, Any]:
    """Score a CSV/Parquet file with the champion; returns rows, version and output path."""
    from ctloop.serve import batch
    from ctloop.serve.follower import ChampionSource

    tracking.configure()
    champion_source = ChampionSource(cfg.name)
    found = champion_source.champion()
    if found is None:
        raise UserError(f"{cfg.name} has no champion to score with; run `ctloop run` first")
    served = champion_source.load(*found)
    rows = batch.predict_file(served.model, source, target, on_progress=on_progress)
    return {"rows": rows, "version": served.version, "output": str(target)}


def deploy_local(cfg: Config) -> dict[str, Any]:
    """Start the local server for the champion in the background, or make it reload now."""
    from ctloop.serve import local

    tracking.configure()
    if registry.champion(cfg.name) is None:
        raise UserError(f"{cfg.name} has no champion to deploy; run `ctloop run` first")
    try:
        return local.deploy(cfg)
    except local.ServeError as exc:
        raise UserError(str(exc)) from None


def stop_local(cfg: Config) -> bool:
    """Stop the background local server of this model; False when none was running."""
    from ctloop.serve import local

    return local.stop(cfg)


def monitor(cfg: Config, current: str | None = None, since: str | None = None,
            until: str | None = None, retrain: bool = False,
            ground_truth: str | None = None):  # fmt: skip
    """One monitor job (drift report, decision, optional retrain); returns a MonitorResult.

    `current`: capture folder / s3:// prefix (default serve.capture.directory) or a CSV/Parquet
    file; `since`/`until`: ISO times (UTC) of the window, `until` exclusive.
    """
    from ctloop.monitor import job

    tracking.configure()
    return job.run_monitor(cfg, current=current, since=since, until=until, retrain=retrain,
                           ground_truth=ground_truth)  # fmt: skip


def monitor_every(cfg: Config, interval_s: float, on_result, current: str | None = None,
                  since: str | None = None, retrain: bool = False,
                  ground_truth: str | None = None, max_runs: int | None = None,
                  sleep=None) -> int:  # fmt: skip
    """Run `monitor` every `interval_s` seconds in the foreground until Ctrl-C (or max_runs).

    A failing job is reported through `on_result(None, exc)` and the schedule goes on, so a
    transient error (store busy, empty window) does not stop the watch. Returns jobs run.
    """
    import time

    sleep = sleep or time.sleep
    runs = 0
    while max_runs is None or runs < max_runs:
        started = time.monotonic()
        try:
            on_result(monitor(cfg, current, since, None, retrain, ground_truth), None)
        except Exception as exc:  # reported, and the next tick tries again
            on_result(None, exc)
        runs += 1
        if max_runs is not None and runs >= max_runs:
            break
        sleep(max(0.0, interval_s - (time.monotonic() - started)))
    return runs
