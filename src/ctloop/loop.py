"""CT orchestration: the only place that chains stages, passing plain values between them."""

from __future__ import annotations

from ctloop import tracking
from ctloop import train as train_stage
from ctloop.config import Config


class UserError(RuntimeError):
    """A refusal the user can act on (no training run yet, no champion, ...)."""


def train(cfg: Config, on_progress=None, extra_tags: dict[str, str] | None = None):
    tracking.configure()
    return train_stage.train(cfg, on_progress=on_progress, extra_tags=extra_tags)
