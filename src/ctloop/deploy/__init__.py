"""Deploy stage: put a registered model version on a serving target.

`sagemaker` deploys through MLflow's SageMaker deployment client with a blue/green switch;
the local target is the `serve` stage's job and is wired in `loop`.
"""

from ctloop.deploy.sagemaker import (
    Deployed,
    DeployError,
    DeployResult,
    Release,
    deploy,
    deployed,
    endpoint_name,
)

__all__ = [
    "DeployError",
    "DeployResult",
    "Deployed",
    "Release",
    "deploy",
    "deployed",
    "endpoint_name",
]
