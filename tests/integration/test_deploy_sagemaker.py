"""`ctloop deploy --target sagemaker` against a moto server over HTTP: create, blue/green update,
rollback, and the refusals that must leave nothing behind in the account.

The champion is a real model trained into a temp MLflow store; MLflow's SageMaker client and
boto3 reach moto through AWS_ENDPOINT_URL. moto lacks UpdateEndpoint, which the test server adds
(tests/support/moto_sagemaker.py) with the documented Updating -> InService behaviour.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
from collections.abc import Iterator
from importlib import metadata
from io import BytesIO
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from ctloop import loop, registry, tracking
from ctloop.config import Config, load_config
from ctloop.deploy import sagemaker as sm_stage
from tests.conftest import SMALL_TRAINING, make_churn, write_config
from tests.support import moto_sagemaker
from tests.support.moto_sagemaker import ACCOUNT, STATE

pytestmark = pytest.mark.slow

REGION = "us-east-1"
BUCKET = "ctloop-deploy-test"
ROLE = "ctloop-sagemaker"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"
IMAGE_REPO = "ctloop-serving"
IMAGE_URL = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{IMAGE_REPO}:1.0"
NAME = "churn-deploy"
FAKE_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip


@pytest.fixture(scope="module")
def aws() -> Iterator[str]:
    """A moto server on a free port; boto3 and MLflow reach it through AWS_ENDPOINT_URL."""
    with moto_sagemaker.moto_server(update_seconds=0.3) as url, pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(key, raising=False)
        for key, value in FAKE_AWS_ENV.items():
            mp.setenv(key, value)
        mp.setenv("AWS_ENDPOINT_URL", url)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        yield url


def prepare_account(url: str, *, role: bool = True, image: bool = True, bucket: bool = True,
                    default_image: bool = False) -> None:  # fmt: skip
    """A clean moto account with what a user sets up once: role, serving image, bucket."""
    requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
    tracking.configure()  # other modules may have pointed MLflow elsewhere
    STATE.history.clear()
    if role:
        boto3.client("iam").create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
            "Principal": {"Service": "sagemaker.amazonaws.com"}}]}))  # fmt: skip
    ecr = boto3.client("ecr", region_name=REGION)
    manifest = json.dumps({"schemaVersion": 2, "config": {}, "layers": [],
                           "mediaType": "application/vnd.docker.distribution.manifest.v2+json"})
    if image:
        ecr.create_repository(repositoryName=IMAGE_REPO)
        ecr.put_image(repositoryName=IMAGE_REPO, imageManifest=manifest, imageTag="1.0")
    if default_image:
        ecr.create_repository(repositoryName="mlflow-pyfunc")
        ecr.put_image(repositoryName="mlflow-pyfunc", imageManifest=manifest,
                      imageTag=metadata.version("mlflow"))  # fmt: skip
    if bucket:
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A temp MLflow store with a trained churn model registered as versions 1 and 2."""
    folder = tmp_path_factory.mktemp("deploy")
    make_churn().to_csv(folder / "churn.csv", index=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        mp.chdir(folder)
        body = {"name": NAME,
                "data": {"source": "churn.csv", "target": "churn", "positive_label": "Yes",
                         "features": {"exclude": ["customer_id"]}},
                "training": SMALL_TRAINING,
                "deploy": {"sagemaker": {"region": REGION, "execution_role_arn": ROLE_ARN,
                                         "image_url": IMAGE_URL, "bucket": BUCKET,
                                         "instance_type": "ml.m5.large", "instance_count": 2,
                                         "capture_prefix": "capture/churn",
                                         "timeout_seconds": 30, "poll_seconds": 0.05}}}
        path = write_config(folder, body)
        cfg = load_config(path)
        tracking.configure()
        best = loop.train(cfg).trials[0]
        model_uri = tracking.run_info(best.run_id)["tags"]["ctloop.model_uri"]  # models:/m-...
        versions = [registry.register(NAME, model_uri, best.run_id, {}).version for _ in range(2)]
        yield {"config": cfg, "path": path, "body": body, "versions": versions, "dir": folder}


def with_sagemaker(cfg: Config, **changes: Any) -> Config:
    settings = cfg.deploy.sagemaker.model_copy(update=changes)
    return cfg.model_copy(update={"deploy": cfg.deploy.model_copy(update={"sagemaker": settings})})


def describe(endpoint: str = NAME) -> dict[str, Any]:
    return boto3.client("sagemaker", region_name=REGION).describe_endpoint(EndpointName=endpoint)


def describe_model_of(desc: dict[str, Any]) -> dict[str, Any]:
    sm = boto3.client("sagemaker", region_name=REGION)
    config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    return sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])


def endpoint_tags(arn: str) -> dict[str, str]:
    tags = boto3.client("sagemaker", region_name=REGION).list_tags(ResourceArn=arn)["Tags"]
    return {t["Key"]: t["Value"] for t in tags}


def weights(desc: dict[str, Any]) -> dict[str, float]:
    return {v["VariantName"]: float(v.get("CurrentWeight", 0)) for v in desc["ProductionVariants"]}


def account_is_empty() -> bool:
    """No SageMaker resource and no object in the bucket: a refusal left nothing behind."""
    sm = boto3.client("sagemaker", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    objects = s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) if BUCKET in buckets else 0
    return (not sm.list_endpoints()["Endpoints"] and not sm.list_models()["Models"]
            and not sm.list_endpoint_configs()["EndpointConfigs"] and objects == 0)  # fmt: skip


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`ctloop ...` in-process through the console-script entry point (exit-code mapping)."""
    from ctloop import cli

    old_argv = sys.argv
    sys.argv = ["ctloop", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old_argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_create_blue_green_update_and_rollback(aws: str, store: dict[str, Any],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    prepare_account(aws)
    v1, v2 = store["versions"]
    cfg: Config = store["config"]
    registry.move_champion(NAME, v1)

    # 1. create: the champion as the only variant, data capture on, version in the tags.
    code, out, err = run_cli(["deploy", "--config", str(store["path"]), "--target", "sagemaker"],
                             capsys)  # fmt: skip
    assert code == 0, err
    assert f"{NAME} created: serves {NAME} v{v1}" in out
    desc = describe()
    assert desc["EndpointStatus"] == "InService"
    assert weights(desc) == {f"v{v1}": 1.0}
    assert desc["DataCaptureConfig"]["EnableCapture"] is True
    assert desc["DataCaptureConfig"]["DestinationS3Uri"] == f"s3://{BUCKET}/capture/churn"
    tags = endpoint_tags(desc["EndpointArn"])
    assert tags[sm_stage.TAG_VERSION] == str(v1) and sm_stage.TAG_PREVIOUS not in tags
    sm = boto3.client("sagemaker", region_name=REGION)
    config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.m5.large", 2)
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["ExecutionRoleArn"] == ROLE_ARN
    assert model["PrimaryContainer"]["Image"] == IMAGE_URL
    # MLflow pushed the registered model itself (MLmodel + ctloop's model files) to the bucket.
    data_url = model["PrimaryContainer"]["ModelDataUrl"]
    assert data_url.startswith(f"s3://{BUCKET}/")
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=data_url.split("/", 3)[3])["Body"]
    with tarfile.open(fileobj=BytesIO(body.read())) as tar:
        names = tar.getnames()
    assert "MLmodel" in names and any(n.endswith("model.json") for n in names)
    assert STATE.history == []  # created, not updated

    # 2. blue/green to a new champion: both variants live first, then only the new one.
    registry.move_champion(NAME, v2)
    result = loop.deploy_sagemaker(cfg)
    assert (result.action, result.version, result.previous_version) == ("updated", v2, v1)
    assert any(s.endswith(":Updating") for s in result.statuses), result.statuses
    add, retire = STATE.history
    assert {v["VariantName"] for v in add.variants_before} == {f"v{v1}"}
    assert {v["VariantName"] for v in add.variants_after} == {f"v{v1}", f"v{v2}"}
    # When blue was retired, all traffic was already on green.
    before_retire = {v["VariantName"]: v.get("CurrentWeight", 0) for v in retire.variants_before}
    assert before_retire == {f"v{v1}": 0.0, f"v{v2}": 1.0}
    assert [v["VariantName"] for v in retire.variants_after] == [f"v{v2}"]
    assert retire.data_capture_after["DestinationS3Uri"] == f"s3://{BUCKET}/capture/churn"
    desc = describe()
    assert weights(desc) == {f"v{v2}": 1.0} and desc["EndpointStatus"] == "InService"
    assert desc["DataCaptureConfig"]["EnableCapture"] is True
    tags = endpoint_tags(desc["EndpointArn"])
    assert (tags[sm_stage.TAG_VERSION], tags[sm_stage.TAG_PREVIOUS]) == (str(v2), str(v1))
    # Blue's model and the superseded endpoint configs are gone; green's remain.
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [
        sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
        ["ProductionVariants"][0]["ModelName"]]  # fmt: skip
    assert [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]] == [
        desc["EndpointConfigName"]]  # fmt: skip
    assert registry.get_version(NAME, v2).tags["ctloop.sagemaker.endpoint"] == f"{REGION}/{NAME}"

    # 3. the same champion again: nothing to do.
    assert loop.deploy_sagemaker(cfg).action == "unchanged"
    assert len(STATE.history) == 2

    # 4. rollback: the same blue/green procedure back to the previous version.
    code, out, err = run_cli(["deploy", "--config", str(store["path"]), "--target", "sagemaker",
                              "--rollback"], capsys)  # fmt: skip
    assert code == 0, err
    assert f"serves {NAME} v{v1} (was v{v2})" in out
    add, retire = STATE.history[2:]
    assert {v["VariantName"] for v in add.variants_after} == {f"v{v1}", f"v{v2}"}
    assert [v["VariantName"] for v in retire.variants_after] == [f"v{v1}"]
    desc = describe()
    assert weights(desc) == {f"v{v1}": 1.0}
    tags = endpoint_tags(desc["EndpointArn"])
    assert (tags[sm_stage.TAG_VERSION], tags[sm_stage.TAG_PREVIOUS]) == (str(v1), str(v2))
    assert registry.champion(NAME).version == v2  # rollback moves the endpoint, not the alias


def test_a_release_sagemaker_rolls_back_leaves_the_old_version_serving(
    aws: str, store: dict[str, Any],
) -> None:  # fmt: skip
    prepare_account(aws)
    v1, v2 = store["versions"]
    registry.move_champion(NAME, v1)
    loop.deploy_sagemaker(store["config"])
    live = describe()
    # A second image that exists in ECR but whose container fails its health check.
    broken = IMAGE_URL.replace(":1.0", ":broken")
    boto3.client("ecr", region_name=REGION).put_image(
        repositoryName=IMAGE_REPO, imageTag="broken",
        imageManifest=json.dumps({"schemaVersion": 2, "config": {}, "layers": [], "mediaType":
                                  "application/vnd.docker.distribution.manifest.v2+json"}))
    STATE.failing_images.add(broken)
    registry.move_champion(NAME, v2)
    with pytest.raises(loop.UserError, match=r"rolled back .* the previous variant keeps serving"):
        loop.deploy_sagemaker(with_sagemaker(store["config"], image_url=broken))
    after = describe()
    assert weights(after) == {f"v{v1}": 1.0}
    assert after["EndpointConfigName"] == live["EndpointConfigName"]
    assert endpoint_tags(after["EndpointArn"])[sm_stage.TAG_VERSION] == str(v1)
    # The refused release's model and endpoint config are cleaned up; v1's remain.
    sm = boto3.client("sagemaker", region_name=REGION)
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [
        describe_model_of(after)["ModelName"]]  # fmt: skip
    assert [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]] == [
        live["EndpointConfigName"]]  # fmt: skip


def test_default_image_is_mlflows_pyfunc_repository(aws: str, store: dict[str, Any]) -> None:
    prepare_account(aws, image=False, default_image=True)
    registry.move_champion(NAME, store["versions"][0])
    result = loop.deploy_sagemaker(with_sagemaker(store["config"], image_url=None))
    assert result.action == "created"
    repository = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlflow-pyfunc"
    expected = f"{repository}:{metadata.version('mlflow')}"
    assert result.image_url == expected
    model = describe_model_of(describe())
    assert model["PrimaryContainer"]["Image"] == expected


def test_rollback_without_a_previous_deployment_is_refused(aws: str, store: dict[str, Any],
                                                           capsys) -> None:  # fmt: skip
    prepare_account(aws)
    code, _, err = run_cli(["deploy", "-c", str(store["path"]), "--target", "sagemaker",
                            "--rollback"], capsys)  # fmt: skip
    assert code == 1
    assert err.strip() == f"error: SageMaker endpoint {NAME} does not exist; nothing to roll back"
    registry.move_champion(NAME, store["versions"][0])
    loop.deploy_sagemaker(store["config"])
    with pytest.raises(loop.UserError, match="records no previous deployment"):
        loop.deploy_sagemaker(store["config"], rollback=True)


@pytest.mark.parametrize(
    ("setup", "changes", "message"),
    [
        ({}, {"execution_role_arn": None}, "deploy.sagemaker.execution_role_arn is not set"),
        ({"role": False}, {}, f"execution role {ROLE_ARN} does not exist"),
        ({"image": False}, {"image_url": None},
         "image_url is not set and the ECR repository 'mlflow-pyfunc' does not exist"),
        ({"image": False}, {}, f"image {IMAGE_URL} not found in ECR"),
        ({"bucket": False}, {}, f"S3 bucket '{BUCKET}' does not exist"),
        ({}, {"bucket": None}, "deploy.sagemaker.bucket is not set"),
    ],
    ids=["role-unset", "role-missing", "image-unset", "image-missing", "bucket-missing",
         "bucket-unset"],
)
def test_refusals_name_the_problem_and_create_nothing(
    aws: str, store: dict[str, Any], setup: dict[str, bool], changes: dict[str, Any],
    message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:  # fmt: skip
    prepare_account(aws, **setup)
    registry.move_champion(NAME, store["versions"][0])
    body = json.loads(json.dumps(store["body"]))
    body["data"]["source"] = str(Path(store["dir"]) / "churn.csv")
    body["deploy"]["sagemaker"].update(changes)
    path = write_config(tmp_path, body)
    code, out, err = run_cli(["deploy", "-c", str(path), "--target", "sagemaker"], capsys)
    assert code == 1 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert account_is_empty()


def test_missing_credentials_are_refused_before_any_call(aws: str, store: dict[str, Any],
                                                         monkeypatch, capsys) -> None:  # fmt: skip
    prepare_account(aws)
    registry.move_champion(NAME, store["versions"][0])
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, _, err = run_cli(["deploy", "-c", str(store["path"]), "--target", "sagemaker"], capsys)
    assert code == 1
    assert "no AWS credentials found" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert account_is_empty()


def test_no_champion_is_refused(aws: str, store: dict[str, Any], capsys) -> None:
    prepare_account(aws)
    registry.delete_alias(NAME, registry.CHAMPION)
    code, _, err = run_cli(["deploy", "-c", str(store["path"]), "--target", "sagemaker"], capsys)
    assert code == 1
    assert err.strip() == f"error: {NAME} has no champion to deploy; run `ctloop run` first"
    assert account_is_empty()
