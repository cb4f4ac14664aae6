"""Create (or update) the MLflow user the pipeline signs in as: the `mlflow-init` one-shot service.

The tasks do not share the human admin's account: they get their own user, so the admin's
password stays out of the Airflow containers and each can be rotated on its own.

That user is an MLflow admin. A non-admin cannot work the registry here: MLflow's basic-auth app
answers 403 "Permission denied" (not "does not exist") to a non-admin asking for the alias of a
registered model that does not exist yet, whatever `default_permission` says, so the first
training run of every model, which looks for a current champion, would fail. (Granting rights on
models before they exist is not possible.)

Environment: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (the admin,
who may manage users), MLFLOW_PIPELINE_USERNAME / MLFLOW_PIPELINE_PASSWORD (the user to ensure).
Idempotent: an existing user gets the password from .env again, so .env stays the one source.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    """Ensure the pipeline's user exists, with the configured password and admin rights; 0 on success."""
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
    client.update_user_admin(username, True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
