# syntax=docker/dockerfile:1
# The image of the production-like stack (docker-compose.yaml): every Airflow component, the Celery
# workers and the MLflow server run from it, so the MLflow server and its clients are always the
# same (locked) version.
#
# It extends the official Airflow image of the version locked in uv.lock (tests/deploy checks that
# the tags below and the lock agree). On top of it we install exactly the versions of uv.lock plus
# the pinned extras the stack needs (deploy/airflow/stack-requirements.txt), never whatever pip
# would resolve today, and nothing at container start (no _PIP_ADDITIONAL_REQUIREMENTS).

# The base image: the official Airflow image by default. The compose test builds on a stand-in
# made from a Debian rootfs (deploy/test/images/airflow-base), because it runs where no image can
# be pulled; `make compose-test BASE=official` builds on the official one.
ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11

# ---------------------------------------------------------------------------------------------
# Stage 1: turn uv.lock into a pinned requirements file. A throwaway stage, so the uv used to
# read the lock (the same version as the Makefile's UV_VERSION; the image's own uv may be older
# than the lock format) never ends up in the final image.
# ---------------------------------------------------------------------------------------------
FROM ${AIRFLOW_BASE_IMAGE} AS requirements

ARG UV_VERSION=0.13.9
SHELL ["/bin/bash", "-o", "pipefail", "-euc"]
# Made by the image's user (airflow), not by WORKDIR, which creates a missing folder as root: uv
# writes the requirements file beside the lock.
RUN mkdir -p /tmp/lock
WORKDIR /tmp/lock
RUN pip install --no-cache-dir --quiet "uv==${UV_VERSION}"
COPY pyproject.toml uv.lock ./
COPY deploy/airflow/stack-requirements.txt ./
# --frozen: use the lock as it is (fail rather than re-resolve); --no-dev: no pytest/moto/ruff;
# --no-emit-project: the project itself is installed from source in the final stage.
# The stack's extra packages (deploy/airflow/stack-requirements.txt: FAB, Celery, PostgreSQL and
# Redis providers) are added only when the lock does not already pin them: the lock wins.
RUN python -m uv export --frozen --no-dev --no-hashes --no-emit-project --quiet \
        --output-file requirements.txt \
    && grep -vE '^\s*(#|$)' stack-requirements.txt | while read -r pin; do \
        name="${pin%%==*}"; \
        grep -qi "^${name}==" requirements.txt || echo "${pin}" >> requirements.txt; \
    done

# ---------------------------------------------------------------------------------------------
# Stage 2: the runtime image.
# ---------------------------------------------------------------------------------------------
FROM ${AIRFLOW_BASE_IMAGE}

# Bytecode compiled at build time: every Airflow task is a fresh Python process, and without .pyc
# files each one recompiles mlflow/GX/evidently/sklearn on import (2-3x slower task start).
ENV UV_COMPILE_BYTECODE=1

# One resolve over the lock's pins plus apache-airflow==<this image's version>: uv refuses the
# build instead of silently upgrading or downgrading Airflow itself. (The image's `uv` installs
# into its /home/airflow/.local environment, as in Airflow's own "extending the image" docs.)
COPY --from=requirements /tmp/lock/requirements.txt /tmp/requirements.txt
RUN uv pip install --no-cache "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/requirements.txt

# The project, laid out as in the repository so the image also runs without the compose mounts
# (docker-compose.yaml mounts dags/, plugins/ and include/ read-only over these same paths).
# Editable install: the package is imported from /opt/airflow/include, so the mounted include/
# and dags/ are always the same version of the code; no sys.path edits, no PYTHONPATH.
# --no-deps: every dependency came from the lock above.
# uv.lock too: its sha256 is recorded with every model (candidates.lock_sha256), for `mlops reproduce`.
COPY --chown=airflow:0 pyproject.toml README.md uv.lock /opt/airflow/
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
RUN uv pip install --no-cache --no-deps --editable /opt/airflow

# Fail the build, not the first task, when the stack cannot import what it runs on.
RUN python -c "import mlops_pipeline.settings, mlflow, sklearn, great_expectations, evidently, psycopg2, redis, \
airflow.providers.celery, airflow.providers.postgres, airflow.providers.redis, \
airflow.providers.fab.auth_manager.fab_auth_manager" \
    && airflow version
