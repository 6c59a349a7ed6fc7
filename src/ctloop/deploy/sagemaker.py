"""Blue/green deployment of a registered model version to an AWS SageMaker endpoint.

MLflow's SageMaker deployment client does the MLflow-specific part: package the model, upload it
to S3, create the SageMaker model and an endpoint config that creates the endpoint or adds the
model as one more production variant. The release procedure around it is plain boto3 here:

1. pre-flight, read-only: credentials (STS), execution role (IAM), bucket (S3) and image (ECR),
   so a refusal leaves nothing behind in the account;
2. create the endpoint, or add the new version as a second variant with weight 0 (the old
   variant keeps all traffic) and wait until the endpoint is InService with both;
3. shift all traffic to the new variant (UpdateEndpointWeightsAndCapacities);
4. only then switch the endpoint to a config holding the new variant alone, and wait;
5. record the live and previous version in endpoint tags (and the variant name `v<version>`),
   which `rollback` reads to run the same procedure back to the previous version.

boto3 is imported lazily: every `ctloop` command imports this stage through `loop`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Literal

from ctloop import registry
from ctloop.config import SageMakerConfig

log = logging.getLogger(__name__)

TAG_MODEL = "ctloop:model-name"
TAG_VERSION = "ctloop:model-version"
TAG_PREVIOUS = "ctloop:previous-version"
TAG_URI = "ctloop:model-uri"
TAG_DEPLOYED_AT = "ctloop:deployed-at"
DEFAULT_IMAGE_REPOSITORY = "mlflow-pyfunc"  # what `mlflow sagemaker build-and-push-container` makes
FLAVOR = "python_function"
_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(?P<account>\d{12}):role/(?:.+/)?(?P<name>[^/]+)$")
_ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repo>[^:@]+)(?::(?P<tag>[^@]+))?(?:@(?P<digest>.+))?$"
)
_ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "403"}


class DeployError(RuntimeError):
    """A deployment that cannot start or did not finish; the message says what to fix."""


@dataclass(frozen=True)
class Release:
    """The registered model version to put on the endpoint."""

    model_name: str
    version: int
    model_uri: str

    @property
    def variant(self) -> str:
        return f"v{self.version}"


@dataclass(frozen=True)
class Deployed:
    """What an endpoint serves now, read from its tags and variants."""

    endpoint: str
    status: str
    model_name: str | None
    version: int | None
    previous_version: int | None
    weights: dict[str, float]


@dataclass(frozen=True)
class DeployResult:
    endpoint: str
    version: int
    previous_version: int | None
    variant: str
    action: Literal["created", "updated", "unchanged"]
    image_url: str
    capture_uri: str
    statuses: tuple[str, ...] = ()  # "<step>:<EndpointStatus>" transitions seen while waiting
    seconds: float = 0.0
    deployed_at: str = ""  # ISO time the endpoint was tagged with this version


def endpoint_name(model_name: str, settings: SageMakerConfig) -> str:
    """`deploy.sagemaker.endpoint_name`, or the model name with characters SageMaker refuses
    replaced by '-'."""
    name = settings.endpoint_name or re.sub(r"[^A-Za-z0-9]+", "-", model_name).strip("-")[:63]
    if not _ENDPOINT_NAME.match(name):
        raise DeployError(f"cannot make a SageMaker endpoint name from {model_name!r}; "
                          "set deploy.sagemaker.endpoint_name")  # fmt: skip
    return name


def capture_config(endpoint: str, settings: SageMakerConfig) -> dict[str, Any]:
    """Data capture of requests and responses to s3://<bucket>/<capture_prefix>.

    SageMaker appends `/<endpoint>/<variant>/yyyy/mm/dd/hh/` to the destination itself.
    """
    return {
        "EnableCapture": True,
        "InitialSamplingPercentage": settings.capture_sampling_percent,
        "DestinationS3Uri": f"s3://{settings.bucket}/{settings.capture_prefix.strip('/')}",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"],
                                     "JsonContentTypes": ["application/json"]},
    }  # fmt: skip


class _Aws:
    """One boto3 session, clients made on first use (credentials and endpoint URL from env)."""

    def __init__(self, region: str) -> None:
        import boto3

        self.region = region
        self.session = boto3.session.Session(region_name=region)
        self._clients: dict[tuple[str, str], Any] = {}

    def client(self, service: str, region: str | None = None) -> Any:
        key = (service, region or self.region)
        if key not in self._clients:
            self._clients[key] = self.session.client(service, region_name=key[1])
        return self._clients[key]


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."


@contextlib.contextmanager
def _aws_errors(action: str) -> Iterator[None]:
    """Any AWS failure not handled more specifically becomes one DeployError line."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        raise DeployError(f"{action} failed: {_one_line(exc)}") from exc
    except BotoCoreError as exc:
        raise DeployError(f"{action} failed: {_one_line(exc)}") from exc


# ---------------------------------------------------------------------------- pre-flight checks


def check_credentials(aws: _Aws) -> str:
    """The caller's account id; refuses early when no credentials are configured or valid."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    try:
        return aws.client("sts").get_caller_identity()["Account"]
    except (NoCredentialsError, PartialCredentialsError):
        raise DeployError("no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, or run where an IAM role provides them"
                          ) from None  # fmt: skip
    except ClientError as exc:
        raise DeployError(f"AWS rejected the credentials: {_one_line(exc)}") from None
    except BotoCoreError as exc:
        raise DeployError(f"cannot reach AWS STS to check credentials: {_one_line(exc)}") from None


def check_role(aws: _Aws, role_arn: str | None, account: str) -> str:
    """The execution role SageMaker assumes to pull the image and model; must exist."""
    from botocore.exceptions import ClientError

    if not role_arn:
        raise DeployError("deploy.sagemaker.execution_role_arn is not set: SageMaker needs an "
                          "IAM role it can assume to pull the image and the model")  # fmt: skip
    match = _ROLE_ARN.match(role_arn)
    if match is None:
        raise DeployError(f"deploy.sagemaker.execution_role_arn {role_arn!r} is not an IAM role "
                          "ARN (arn:aws:iam::<account>:role/<name>)")  # fmt: skip
    if match["account"] != account:
        log.info("execution role %s is in another account; not checked", role_arn)
        return role_arn
    try:
        aws.client("iam").get_role(RoleName=match["name"])
    except ClientError as exc:
        if _code(exc) == "NoSuchEntity":
            raise DeployError(f"execution role {role_arn} does not exist "
                              "(deploy.sagemaker.execution_role_arn)") from None  # fmt: skip
        if _code(exc) not in _ACCESS_DENIED:
            raise
        log.warning("cannot verify execution role %s (%s); continuing", role_arn, _code(exc))
    return role_arn


def check_bucket(aws: _Aws, bucket: str | None) -> str:
    """The bucket MLflow uploads the model to and data capture writes to; must be reachable."""
    from botocore.exceptions import ClientError

    if not bucket:
        raise DeployError("deploy.sagemaker.bucket is not set: the model is uploaded there and "
                          "captured traffic is written there")  # fmt: skip
    try:
        aws.client("s3").head_bucket(Bucket=bucket)
    except ClientError as exc:
        if _code(exc) in {"404", "NoSuchBucket", "NotFound"}:
            raise DeployError(f"S3 bucket {bucket!r} does not exist (deploy.sagemaker.bucket)"
                              ) from None  # fmt: skip
        if _code(exc) in _ACCESS_DENIED:
            raise DeployError(f"no access to S3 bucket {bucket!r} (deploy.sagemaker.bucket)"
                              ) from None  # fmt: skip
        raise
    return bucket


def resolve_image(aws: _Aws, image_url: str | None) -> str:
    """The serving image: `deploy.sagemaker.image_url`, else MLflow's `mlflow-pyfunc:<version>`.

    ECR images are checked to exist, because SageMaker would only fail minutes later.
    """
    from botocore.exceptions import ClientError

    if not image_url:
        try:
            repo = aws.client("ecr").describe_repositories(
                repositoryNames=[DEFAULT_IMAGE_REPOSITORY])["repositories"][0]  # fmt: skip
        except ClientError as exc:
            if _code(exc) != "RepositoryNotFoundException":
                raise
            raise DeployError(
                "deploy.sagemaker.image_url is not set and the ECR repository "
                f"'{DEFAULT_IMAGE_REPOSITORY}' does not exist: push MLflow's serving image "
                "with `mlflow sagemaker build-and-push-container` or set image_url"
            ) from None
        image_url = f"{repo['repositoryUri']}:{metadata.version('mlflow')}"
    match = _ECR_IMAGE.match(image_url)
    if match is None:
        log.info("image %s is not in ECR; not checked", image_url)
        return image_url
    image_id = ({"imageDigest": match["digest"]} if match["digest"]
                else {"imageTag": match["tag"] or "latest"})  # fmt: skip
    try:
        aws.client("ecr", match["region"]).describe_images(
            registryId=match["account"], repositoryName=match["repo"], imageIds=[image_id])
    except ClientError as exc:
        if _code(exc) in {"RepositoryNotFoundException", "ImageNotFoundException"}:
            raise DeployError(f"image {image_url} not found in ECR: push it with `mlflow "
                              "sagemaker build-and-push-container` or fix "
                              "deploy.sagemaker.image_url") from None  # fmt: skip
        if _code(exc) not in _ACCESS_DENIED:
            raise
        log.warning("cannot verify image %s (%s); continuing", image_url, _code(exc))
    return image_url


# ---------------------------------------------------------------------------- endpoint state


def _describe(sm: Any, endpoint: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return sm.describe_endpoint(EndpointName=endpoint)
    except ClientError as exc:
        if _code(exc) == "ValidationException" and "Could not find" in str(exc):
            return None
        raise


def _weights(desc: dict[str, Any]) -> dict[str, float]:
    """variant name -> current traffic weight (SageMaker omits a weight of 0)."""
    return {v["VariantName"]: float(v.get("CurrentWeight", 0.0))
            for v in desc.get("ProductionVariants", [])}  # fmt: skip


def _tags(sm: Any, arn: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    kwargs: dict[str, Any] = {"ResourceArn": arn}
    while True:
        page = sm.list_tags(**kwargs)
        tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})  # later wins
        if not page.get("NextToken"):
            return tags
        kwargs["NextToken"] = page["NextToken"]


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _read(sm: Any, endpoint: str) -> Deployed | None:
    desc = _describe(sm, endpoint)
    if desc is None:
        return None
    tags = _tags(sm, desc["EndpointArn"])
    weights = _weights(desc)
    version = _int(tags.get(TAG_VERSION))
    if version is None and weights:  # tags lost: the busiest `v<version>` variant says it
        busiest = max(weights, key=weights.__getitem__)
        version = _int(busiest[1:]) if busiest.startswith("v") else None
    return Deployed(endpoint, desc["EndpointStatus"], tags.get(TAG_MODEL), version,
                    _int(tags.get(TAG_PREVIOUS)), weights)  # fmt: skip


def deployed(endpoint: str, settings: SageMakerConfig) -> Deployed | None:
    """What `endpoint` serves now, or None when it does not exist."""
    aws = _Aws(settings.region)
    check_credentials(aws)
    with _aws_errors(f"reading SageMaker endpoint {endpoint}"):
        return _read(aws.client("sagemaker"), endpoint)


@dataclass
class _Waiter:
    """Polls DescribeEndpoint until a step's condition holds, recording status transitions."""

    sm: Any
    endpoint: str
    timeout: float
    poll: float
    statuses: list[str] = field(default_factory=list)

    def wait(self, step: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        left_service = False
        while True:
            desc = self.sm.describe_endpoint(EndpointName=self.endpoint)
            status = desc["EndpointStatus"]
            if not self.statuses or self.statuses[-1] != f"{step}:{status}":
                self.statuses.append(f"{step}:{status}")
                log.info("endpoint %s: %s: %s", self.endpoint, step, status)
            if status == "Failed":
                raise DeployError(f"endpoint {self.endpoint} failed while {step}: "
                                  f"{desc.get('FailureReason', 'no reason given')}")  # fmt: skip
            if status == "InService":
                if done(desc):
                    return desc
                if left_service:  # it updated and came back without the change
                    raise DeployError(
                        f"SageMaker rolled back endpoint {self.endpoint} while {step}: "
                        f"{desc.get('FailureReason', 'see its CloudWatch logs')}; "
                        "the previous variant keeps serving"
                    )
            else:
                left_service = True
            if time.monotonic() >= deadline:
                raise DeployError(f"timed out after {self.timeout:g} s waiting for endpoint "
                                  f"{self.endpoint} while {step} (status {status}); see "
                                  "deploy.sagemaker.timeout_seconds")  # fmt: skip
            time.sleep(self.poll)


# ---------------------------------------------------------------------------- the procedure


def _mlflow_config(release: Release, settings: SageMakerConfig, image: str,
                   capture: dict[str, Any], mode: str) -> dict[str, Any]:  # fmt: skip
    return {
        "mode": mode,
        "execution_role_arn": settings.execution_role_arn,
        "bucket": settings.bucket,
        "image_url": image,
        "region_name": settings.region,
        "instance_type": settings.instance_type,
        "instance_count": settings.instance_count,
        "data_capture_config": capture,
        "variant_name": release.variant,
        # We wait ourselves (MLflow's update wait sleeps 20 s first) and retire the old variant
        # ourselves; MLflow allows asynchronous only when it is told to keep ("archive") it.
        "synchronous": False,
        "archive": True,
        "timeout_seconds": settings.timeout_seconds,
        "tags": {TAG_MODEL: release.model_name, TAG_VERSION: str(release.version)},
    }


def _call_mlflow(step: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # MlflowException, or a botocore error raised inside MLflow
        raise DeployError(f"MLflow's SageMaker client failed while {step}: {_one_line(exc)}"
                          ) from exc  # fmt: skip


def _config_name(endpoint: str, version: int) -> str:
    return f"{endpoint[:40]}-v{version}-{int(time.time() * 1000)}"


def _only(weights: dict[str, float], variant: str) -> bool:
    return weights.get(variant) == 1.0 and all(w == 0.0 for n, w in weights.items() if n != variant)


def _blue_green(
    sm: Any, client: Any, waiter: _Waiter, release: Release, settings: SageMakerConfig,
    image: str, capture: dict[str, Any],
) -> None:  # fmt: skip
    """Add green next to blue, shift traffic to green, then drop blue."""
    endpoint, green = waiter.endpoint, release.variant
    desc = waiter.wait("waiting for a stable endpoint", lambda d: True)
    stale_configs = {desc["EndpointConfigName"]}
    if green not in _weights(desc):
        blue_config = desc["EndpointConfigName"]
        _call_mlflow("adding the new variant", client.update_deployment, endpoint,
                     release.model_uri, flavor=FLAVOR,
                     config=_mlflow_config(release, settings, image, capture, "add"))  # fmt: skip
        try:
            desc = waiter.wait(f"adding variant {green}", lambda d: green in _weights(d))
        except DeployError:
            _discard_unused(sm, endpoint, keep=blue_config, variant=green)
            raise
        stale_configs.add(desc["EndpointConfigName"])

    counts = {v["VariantName"]: v.get("CurrentInstanceCount") for v in desc["ProductionVariants"]}
    sm.update_endpoint_weights_and_capacities(EndpointName=endpoint, DesiredWeightsAndCapacities=[
        {"VariantName": name, "DesiredWeight": 1.0 if name == green else 0.0,
         **({"DesiredInstanceCount": count} if count else {})}
        for name, count in counts.items()])  # fmt: skip
    desc = waiter.wait(f"shifting traffic to {green}", lambda d: _only(_weights(d), green))

    live = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    variant = next(v for v in live["ProductionVariants"] if v["VariantName"] == green)
    retired = [v["ModelName"] for v in live["ProductionVariants"] if v["VariantName"] != green]
    final = _config_name(endpoint, release.version)
    tags = [{"Key": TAG_MODEL, "Value": release.model_name},
            {"Key": TAG_VERSION, "Value": str(release.version)}]  # fmt: skip
    sm.create_endpoint_config(EndpointConfigName=final, DataCaptureConfig=capture, Tags=tags,
                              ProductionVariants=[{**variant, "InitialVariantWeight": 1.0}])
    sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=final)
    try:
        waiter.wait(f"retiring the old variants of {endpoint}",
                    lambda d: d["EndpointConfigName"] == final and set(_weights(d)) == {green})
    except DeployError as exc:
        _best_effort(f"delete endpoint config {final}", sm.delete_endpoint_config,
                     EndpointConfigName=final)  # fmt: skip
        raise DeployError(f"{exc} (all traffic is on {green} already; run the deploy again to "
                          "retire the old variant)") from exc  # fmt: skip

    # Only now is blue unreachable; its config and model are no longer needed (the registry
    # keeps the model version, so a rollback re-creates it).
    for name in sorted(stale_configs - {final}):
        _best_effort(f"delete endpoint config {name}", sm.delete_endpoint_config,
                     EndpointConfigName=name)  # fmt: skip
    for name in retired:
        _best_effort(f"delete model {name}", sm.delete_model, ModelName=name)


def _discard_unused(sm: Any, endpoint: str, keep: str, variant: str) -> None:
    """After SageMaker rolled an update back: drop the endpoint configs MLflow made for
    `variant` and its model, so a refused release leaves only what serves."""
    pages = sm.get_paginator("list_endpoint_configs").paginate(NameContains=endpoint)
    for summary in (c for page in pages for c in page["EndpointConfigs"]):
        name = summary["EndpointConfigName"]
        if name == keep or not name.startswith(f"{endpoint}-config-"):
            continue
        config = sm.describe_endpoint_config(EndpointConfigName=name)
        models = [v["ModelName"] for v in config["ProductionVariants"]
                  if v["VariantName"] == variant]  # fmt: skip
        if models:
            _best_effort(f"delete endpoint config {name}", sm.delete_endpoint_config,
                         EndpointConfigName=name)  # fmt: skip
            for model in models:
                _best_effort(f"delete model {model}", sm.delete_model, ModelName=model)


def _best_effort(what: str, fn: Callable[..., Any], **kwargs: Any) -> None:
    try:
        fn(**kwargs)
    except Exception as exc:  # cleanup must not fail a finished deployment
        log.warning("could not %s: %s", what, _one_line(exc))


def deploy(release: Release, settings: SageMakerConfig, endpoint: str) -> DeployResult:
    """Create `endpoint` for the release, or switch it there blue/green; see the module doc."""
    started = time.monotonic()
    aws = _Aws(settings.region)
    account = check_credentials(aws)
    with _aws_errors(f"deploying {release.model_name} v{release.version} to {endpoint}"):
        check_role(aws, settings.execution_role_arn, account)
        check_bucket(aws, settings.bucket)
        image = resolve_image(aws, settings.image_url)
        sm = aws.client("sagemaker")
        before = _read(sm, endpoint)
        if before is not None and before.model_name != release.model_name:
            raise DeployError(
                f"endpoint {endpoint} exists but serves "
                f"{before.model_name or 'a model not deployed by ctloop'}; choose another "
                "deploy.sagemaker.endpoint_name or delete that endpoint"
            )
        capture = capture_config(endpoint, settings)
        waiter = _Waiter(sm, endpoint, settings.timeout_seconds, settings.poll_seconds)
        client = registry.deploy_client(f"sagemaker:/{settings.region}")
        if before is None:
            action = "created"
            _call_mlflow("creating the endpoint", client.create_deployment, endpoint,
                         release.model_uri, flavor=FLAVOR,
                         config=_mlflow_config(release, settings, image, capture, "create"))
            waiter.wait(f"creating {endpoint}", lambda d: release.variant in _weights(d))
        elif _only(before.weights, release.variant) and len(before.weights) == 1:
            action = "unchanged"
            log.info("endpoint %s already serves %s", endpoint, release.variant)
        else:
            action = "updated"
            _blue_green(sm, client, waiter, release, settings, image, capture)
        previous = before.version if before is not None else None
        deployed_at = datetime.now(UTC).isoformat(timespec="seconds")
        if action == "unchanged":
            previous = before.previous_version
        else:
            arn = sm.describe_endpoint(EndpointName=endpoint)["EndpointArn"]
            tags = {TAG_MODEL: release.model_name, TAG_VERSION: str(release.version),
                    TAG_URI: release.model_uri, TAG_DEPLOYED_AT: deployed_at}  # fmt: skip
            if previous is not None:
                tags[TAG_PREVIOUS] = str(previous)
            sm.add_tags(ResourceArn=arn, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return DeployResult(endpoint, release.version, previous, release.variant, action, image,
                        capture["DestinationS3Uri"], tuple(waiter.statuses),
                        round(time.monotonic() - started, 2), deployed_at)  # fmt: skip
