"""The MLflow Model Registry: versions, the champion/challenger aliases, and mirrored stages.

Aliases are the truth (`champion`, `challenger`, `previous-champion`); stages are a mirror
kept for the MLflow UI and `models:/<name>/Production`. Moving the `champion` alias is the
single commit point of a promotion: a crash before it leaves the old champion serving, and
`reconcile_stages` repairs the mirror from the aliases after it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
PRODUCTION, STAGING, ARCHIVED, NONE = "Production", "Staging", "Archived", "None"
TAG_LIMIT = 5000  # MLflow's limit for a model version tag value is 5000 characters
DESCRIPTION_LIMIT = 5000  # keep within what every backend store accepts


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    run_id: str | None
    source: str
    stage: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    created_ms: int = 0
    updated_ms: int = 0

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _to_version(mv, aliases: tuple[str, ...] = ()) -> ModelVersion:
    return ModelVersion(
        name=mv.name, version=int(mv.version), run_id=mv.run_id, source=mv.source,
        stage=mv.current_stage or NONE, tags=dict(mv.tags or {}),
        aliases=tuple(mv.aliases or aliases), created_ms=mv.creation_timestamp or 0,
        updated_ms=mv.last_updated_timestamp or 0,
    )


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or "not found" in str(
        exc
    ).lower()


def aliases(name: str) -> dict[str, int]:
    """alias -> version for the registered model ({} when it does not exist yet)."""
    try:
        model = _client().get_registered_model(name)
    except Exception as exc:
        if _is_missing(exc):
            return {}
        raise
    return {alias: int(version) for alias, version in (model.aliases or {}).items()}


def by_alias(name: str, alias: str) -> ModelVersion | None:
    try:
        mv = _client().get_model_version_by_alias(name, alias)
    except Exception as exc:
        if _is_missing(exc):
            return None
        raise
    return get_version(name, int(mv.version))


def champion(name: str) -> ModelVersion | None:
    return by_alias(name, CHAMPION)


def get_version(name: str, version: int) -> ModelVersion:
    mv = _client().get_model_version(name, str(version))
    names = tuple(a for a, v in aliases(name).items() if v == int(version))
    return _to_version(mv, names)


def versions(name: str) -> list[ModelVersion]:
    """All versions, newest first, with their aliases filled in (search omits them)."""
    by_version: dict[int, list[str]] = {}
    for alias, version in aliases(name).items():
        by_version.setdefault(version, []).append(alias)
    found = _client().search_model_versions(f"name = '{name}'", max_results=1000)
    result = [_to_version(mv, tuple(by_version.get(int(mv.version), ()))) for mv in found]
    return sorted(result, key=lambda v: v.version, reverse=True)


def register(
    name: str, model_uri: str, run_id: str | None, tags: Mapping[str, Any]
) -> ModelVersion:
    """A new version of `name` from a logged model, tagged with the decision record.

    Uses the client directly (not `mlflow.register_model`) so nothing is printed to stderr.
    """
    client = _client()
    with contextlib.suppress(Exception):  # already exists: fine, concurrent creation: fine
        client.create_registered_model(name, description="Managed by ctloop: aliases are the "
                                       "truth, stages mirror them.")
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    mv = client.create_model_version(name=name, source=model_uri, run_id=run_id,
                                     tags=_tag_values(tags), model_id=model_id)
    return get_version(name, int(mv.version))


def set_description(name: str, version: int, text: str) -> None:
    """The version's description: the first thing the MLflow UI shows on the version page."""
    _client().update_model_version(name, str(version), description=text[:DESCRIPTION_LIMIT])


def set_tags(name: str, version: int, tags: Mapping[str, Any]) -> None:
    client = _client()
    for key, value in _tag_values(tags).items():
        client.set_model_version_tag(name, str(version), key, value)


def _tag_values(tags: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in tags.items():
        text = str(value)
        out[key] = text if len(text) <= TAG_LIMIT else text[: TAG_LIMIT - 3] + "..."
    return out


def set_alias(name: str, alias: str, version: int) -> None:
    _client().set_registered_model_alias(name, alias, str(version))


def delete_alias(name: str, alias: str) -> None:
    with contextlib.suppress(Exception):
        _client().delete_registered_model_alias(name, alias)


def set_stage(name: str, version: int, stage: str) -> None:
    # Stages are deprecated in MLflow 3 but still drive the UI's stage column.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        _client().transition_model_version_stage(name, str(version), stage)


def move_champion(name: str, version: int) -> int | None:
    """The commit point of a promotion: champion -> version, old champion -> previous-champion.

    Returns the replaced champion's version (None for the first).
    """
    current = aliases(name).get(CHAMPION)
    if current == version:
        return None
    set_alias(name, CHAMPION, version)
    if current is not None:
        set_alias(name, PREVIOUS_CHAMPION, current)
    reconcile_stages(name)
    return current


def reconcile_stages(name: str, attempts: int = 5) -> None:
    """Make stages mirror the aliases: champion Production, challenger Staging, old Archived.

    Idempotent; re-reads the aliases afterwards and repeats if another process moved them.
    """
    for _ in range(attempts):
        before = aliases(name)
        champ = before.get(CHAMPION)
        for mv in versions(name):
            if mv.version == champ:
                wanted = PRODUCTION
            elif mv.stage == PRODUCTION:
                wanted = ARCHIVED
            elif mv.version == before.get(CHALLENGER) and mv.stage == NONE:
                wanted = STAGING
            else:
                continue
            if mv.stage != wanted:
                set_stage(name, mv.version, wanted)
        if aliases(name) == before:
            return
    log.warning("registry %s: aliases kept moving while reconciling stages", name)


@contextlib.contextmanager
def promotion_lock(name: str, timeout_s: float = 300.0) -> Iterator[None]:
    """Serialise promotions of one model on this machine (the gate reads, then the alias moves).

    MLflow has no compare-and-set on aliases; on one machine this lock closes the window, and
    across machines the caller re-checks the champion just before moving the alias.
    """
    from mlflow import get_tracking_uri

    key = hashlib.sha256(f"{get_tracking_uri()}|{name}".encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"ctloop-promote-{key}.lock"
    deadline = time.monotonic() + timeout_s
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another ctloop process holds {path}") from None
                time.sleep(0.1)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def champion_uri(name: str) -> str:
    return f"models:/{name}@{CHAMPION}"


def deploy_client(target_uri: str):
    """MLflow's deployment client for a target such as `sagemaker:/us-east-1`.

    Here only because this module may import MLflow; the deploy stage owns all the logic.
    """
    from mlflow.deployments import get_deploy_client

    return get_deploy_client(target_uri)
