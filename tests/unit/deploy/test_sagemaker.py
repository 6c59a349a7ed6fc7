"""The parts of the SageMaker release procedure that need no AWS: names, capture settings,
argument checks, and how the endpoint waiter reads a sequence of DescribeEndpoint answers."""

from __future__ import annotations

from typing import Any

import pytest

from ctloop.config import ConfigError, SageMakerConfig, load_config
from ctloop.deploy import sagemaker as stage
from tests.conftest import write_config


def test_endpoint_name_is_the_model_name_made_valid_for_sagemaker() -> None:
    assert stage.endpoint_name("telco_churn.v2", SageMakerConfig()) == "telco-churn-v2"
    assert stage.endpoint_name("churn", SageMakerConfig(endpoint_name="prod-churn")) == "prod-churn"
    assert len(stage.endpoint_name("a" * 100, SageMakerConfig())) == 63


def test_invalid_endpoint_name_in_config_is_a_config_error_naming_the_key(tmp_path) -> None:
    path = write_config(tmp_path, {"name": "x", "data": {"source": "x.csv"},
                                   "deploy": {"sagemaker": {"endpoint_name": "bad_name"}}})
    with pytest.raises(ConfigError, match=r"deploy\.sagemaker\.endpoint_name"):
        load_config(path)


def test_capture_config_records_input_and_output_under_the_configured_prefix() -> None:
    settings = SageMakerConfig(bucket="b", capture_prefix="/capture/churn/",
                               capture_sampling_percent=25)  # fmt: skip
    capture = stage.capture_config("churn", settings)
    assert capture["EnableCapture"] is True
    assert capture["DestinationS3Uri"] == "s3://b/capture/churn"
    assert capture["InitialSamplingPercentage"] == 25
    assert {o["CaptureMode"] for o in capture["CaptureOptions"]} == {"Input", "Output"}


@pytest.mark.parametrize(("arn", "message"), [
    (None, "execution_role_arn is not set"),
    ("", "execution_role_arn is not set"),
    ("my-role", "is not an IAM role ARN"),
    ("arn:aws:iam::123456789012:user/bob", "is not an IAM role ARN"),
])  # fmt: skip
def test_role_refused_before_any_aws_call(arn: str | None, message: str) -> None:
    with pytest.raises(stage.DeployError, match=message):
        stage.check_role(None, arn, "123456789012")  # type: ignore[arg-type]


def test_role_in_another_account_is_accepted_without_an_iam_lookup() -> None:
    arn = "arn:aws:iam::999999999999:role/service/sagemaker-exec"
    assert stage.check_role(None, arn, "123456789012") == arn  # type: ignore[arg-type]


def test_bucket_unset_is_refused() -> None:
    with pytest.raises(stage.DeployError, match=r"deploy\.sagemaker\.bucket is not set"):
        stage.check_bucket(None, None)  # type: ignore[arg-type]


class ScriptedEndpoint:
    """Answers DescribeEndpoint from a script (the last answer repeats): SageMaker's timing."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.calls = 0

    def describe_endpoint(self, EndpointName: str) -> dict[str, Any]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return {"EndpointName": EndpointName, "EndpointConfigName": "c1", **answer}


def waiter(answers: list[dict[str, Any]], timeout: float = 5.0) -> stage._Waiter:
    return stage._Waiter(ScriptedEndpoint(answers), "ep", timeout=timeout, poll=0.001)


def test_waiter_returns_when_the_change_is_in_service_and_records_transitions() -> None:
    w = waiter([{"EndpointStatus": "InService"}, {"EndpointStatus": "Updating"},
                {"EndpointStatus": "Updating"},
                {"EndpointStatus": "InService", "EndpointConfigName": "c2"}])  # fmt: skip
    desc = w.wait("switching", lambda d: d["EndpointConfigName"] == "c2")
    assert desc["EndpointConfigName"] == "c2"
    assert w.statuses == ["switching:InService", "switching:Updating", "switching:InService"]


def test_waiter_reports_a_rolled_back_update() -> None:
    w = waiter([{"EndpointStatus": "Updating"},
                {"EndpointStatus": "InService", "FailureReason": "ping health check failed"}])
    with pytest.raises(stage.DeployError, match=r"rolled back.*ping health check failed.*keeps"):
        w.wait("adding variant v2", lambda d: d["EndpointConfigName"] == "c2")


def test_waiter_reports_a_failed_endpoint_with_its_reason() -> None:
    w = waiter([{"EndpointStatus": "Creating"},
                {"EndpointStatus": "Failed", "FailureReason": "image not found"}])
    with pytest.raises(stage.DeployError, match="failed while creating ep: image not found"):
        w.wait("creating ep", lambda d: True)


def test_waiter_times_out_with_the_setting_to_change() -> None:
    w = waiter([{"EndpointStatus": "Updating"}], timeout=0.05)
    expected = r"timed out after 0.05 s .*deploy\.sagemaker\.timeout_seconds"
    with pytest.raises(stage.DeployError, match=expected):
        w.wait("shifting traffic", lambda d: False)


def test_only_means_all_traffic_on_one_variant() -> None:
    assert stage._only({"v2": 1.0, "v1": 0.0}, "v2")
    assert not stage._only({"v2": 0.5, "v1": 0.5}, "v2")
    assert not stage._only({"v1": 1.0}, "v2")
