"""Create (or update) the MLflow user the pipeline signs in as: the `mlflow-init` one-shot service.

The pipeline does not use MLflow's admin account: its own user (not an admin) creates its
experiments and registered models and so gets MANAGE on exactly those (MLflow's basic-auth rule
for creators); everything else stays read-only to it (`default_permission = READ`).

Environment: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (the admin,
who may manage users), MLFLOW_PIPELINE_USERNAME / MLFLOW_PIPELINE_PASSWORD (the user to ensure).
Idempotent: an existing user gets the password from .env again, so .env stays the one source.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    """Ensure the pipeline's user exists with the configured password; 0 on success."""
    from mlflow.exceptions import RestException
    from mlflow.server.auth.client import AuthServiceClient

    client = AuthServiceClient(os.environ["MLFLOW_TRACKING_URI"])
    username = os.environ["MLFLOW_PIPELINE_USERNAME"]
    password = os.environ["MLFLOW_PIPELINE_PASSWORD"]
    if username == os.environ["MLFLOW_TRACKING_USERNAME"]:
        print("MLFLOW_PIPELINE_USERNAME must differ from the admin's name", file=sys.stderr)
        return 2
    try:
        client.get_user(username)
    except RestException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_user(username, password)
        print(f"created MLflow user {username!r}")
    else:
        client.update_user_password(username, password)
        print(f"MLflow user {username!r} exists; password set from the environment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
