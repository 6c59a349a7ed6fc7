"""A moto server that also speaks SageMaker `UpdateEndpoint`, for deploy tests without AWS.

moto 5.2.5 implements models, endpoint configs, endpoints and UpdateEndpointWeightsAndCapacities,
but not UpdateEndpoint, which every blue/green switch needs. This module registers that action on
moto's SageMaker response class with the behaviour the API reference documents:

- the endpoint must exist and be InService (otherwise ValidationException), the endpoint config
  must exist;
- the endpoint goes to `Updating` at once and reports the pending config in
  `PendingDeploymentSummary`; the old variants keep serving (DescribeEndpoint still shows them);
- after `update_seconds` the endpoint's variant set and data capture config are replaced by the
  new config's, `EndpointConfigName` points to it, and the status returns to `InService`.

Every UpdateEndpoint is also written to `history` (variants before and after), so a test can see
the intermediate states of a blue/green deployment from the server's side, not from the client's.
Nothing here touches ctloop: the code under test talks to this server over HTTP only.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ACCOUNT = "123456789012"  # moto's default account id


@dataclass
class UpdateRecord:
    """One UpdateEndpoint call as the server saw it."""

    endpoint: str
    old_config: str
    new_config: str
    variants_before: list[dict[str, Any]]
    variants_after: list[dict[str, Any]]
    data_capture_after: dict[str, Any]


@dataclass
class SageMakerUpdateState:
    update_seconds: float = 0.3
    history: list[UpdateRecord] = field(default_factory=list)
    # Images whose containers "fail health checks": an update to a config using one is rolled
    # back as SageMaker does (InService on the old config, FailureReason set).
    failing_images: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


STATE = SageMakerUpdateState()


def _update_endpoint(self) -> Any:
    """The UpdateEndpoint action, bound as a method of moto's SageMakerResponse."""
    from moto.core.responses import ActionResult
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import FakeEndpoint

    backend = self.sagemaker_backend
    name = self._get_param("EndpointName")
    config_name = self._get_param("EndpointConfigName")
    endpoint = backend.endpoints.get(name)
    if endpoint is None:
        arn = FakeEndpoint.arn_formatter(name, backend.account_id, backend.region_name)
        raise ValidationError(message=f"Could not find endpoint '{arn}'.")
    config = backend.describe_endpoint_config(config_name)  # raises ValidationError if missing
    with STATE.lock:
        if endpoint.endpoint_status != "InService":
            raise ValidationError(
                message=f"Cannot update in-progress endpoint '{endpoint.arn}'."
            )
        old_config = endpoint.endpoint_config_name
        endpoint.endpoint_status = "Updating"
        endpoint.pending_deployment_summary = {
            "EndpointConfigName": config_name,
            "StartTime": datetime.now(UTC),
        }
        before = [dict(v) for v in endpoint.production_variants]
    variants = endpoint._process_production_variants(config["ProductionVariants"])
    capture = config.get("DataCaptureConfig") or {}
    images = {backend._models[v["ModelName"]].primary_container.get("Image")
              for v in config["ProductionVariants"] if v["ModelName"] in backend._models}
    failing = sorted(images & STATE.failing_images)

    def finish() -> None:
        with STATE.lock:
            if failing:  # documented: a failed update leaves the endpoint on its old config
                endpoint.pending_deployment_summary = None
                endpoint.failure_reason = (f"The primary container for production variant "
                                           f"did not pass the ping health check ({failing[0]}).")
                endpoint.endpoint_status = "InService"
                return
            endpoint.failure_reason = None
            endpoint.production_variants = variants
            endpoint.data_capture_config = capture
            endpoint.endpoint_config_name = config_name
            endpoint.pending_deployment_summary = None
            endpoint.last_modified_time = datetime.now(UTC)
            endpoint.endpoint_status = "InService"
            STATE.history.append(UpdateRecord(name, old_config, config_name, before,
                                              [dict(v) for v in variants], dict(capture)))

    timer = threading.Timer(STATE.update_seconds, finish)
    timer.daemon = True
    timer.start()
    return ActionResult({"EndpointArn": endpoint.arn})


def install() -> None:
    """Register UpdateEndpoint on moto's SageMaker responses (idempotent)."""
    from moto.sagemaker.responses import SageMakerResponse

    SageMakerResponse.update_endpoint = _update_endpoint


def uninstall() -> None:
    from moto.sagemaker.responses import SageMakerResponse

    if getattr(SageMakerResponse, "update_endpoint", None) is _update_endpoint:
        del SageMakerResponse.update_endpoint


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_server(update_seconds: float = 0.3) -> Iterator[str]:
    """A ThreadedMotoServer on a free loopback port, UpdateEndpoint installed; yields its URL."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    install()
    STATE.update_seconds = update_seconds
    STATE.history.clear()
    STATE.failing_images.clear()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        uninstall()
