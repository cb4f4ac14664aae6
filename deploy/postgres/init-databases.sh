#!/usr/bin/env bash
# Creates the stack's databases, each owned by its own role, on the first start of an empty data
# volume (the postgres image runs /docker-entrypoint-initdb.d/* once, as the superuser):
#   airflow      Airflow's metadata DB and the Celery result backend   role airflow
#   mlflow       MLflow's tracking and model registry store            role mlflow
#   mlflow_auth  MLflow's basic-auth users and permissions             role mlflow
# Separate roles: MLflow cannot read or change Airflow's tables (connections, variables), nor the
# other way round. Passwords come from the environment (.env); psql's :'var' quotes them as
# literals, so no password is ever spliced into SQL text.
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD (make env generates it)}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD (make env generates it)}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v airflow_password="${AIRFLOW_DB_PASSWORD}" -v mlflow_password="${MLFLOW_DB_PASSWORD}" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE airflow OWNER airflow;
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
-- PostgreSQL 15+ no longer lets every role create objects in public; the owners get it back.
\connect airflow
ALTER SCHEMA public OWNER TO airflow;
\connect mlflow
ALTER SCHEMA public OWNER TO mlflow;
\connect mlflow_auth
ALTER SCHEMA public OWNER TO mlflow;
SQL

# Nobody but the owner (and the superuser) may connect to a database.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres <<'SQL'
REVOKE CONNECT ON DATABASE airflow, mlflow, mlflow_auth FROM PUBLIC;
SQL
