#!/usr/bin/env bash
# The official Airflow image's entrypoint behaviours that docker-compose.yaml relies on, for the
# compose test's stand-in base image (deploy/test/images/airflow-base/Dockerfile):
#   1. an arbitrary uid (AIRFLOW_UID other than 50000) gets a passwd entry with HOME=/home/airflow
#   2. the metadata DB is waited for (`airflow db check`, CONNECTION_CHECK_MAX_COUNT tries,
#      CONNECTION_CHECK_SLEEP_TIME s apart; 0 tries: no wait), and for `scheduler`/`celery` the
#      Celery broker as well
#   3. `bash ...` and `python ...` run as given; `airflow ...` and anything else run as
#      `airflow <args>` (so `command: scheduler` starts the scheduler)
set -euo pipefail
umask 0002

if ! whoami >/dev/null 2>&1 && [[ -w /etc/passwd ]]; then
    echo "airflow:x:$(id -u):0:airflow user:${AIRFLOW_USER_HOME_DIR}:/bin/bash" >>/etc/passwd
fi
export HOME="${AIRFLOW_USER_HOME_DIR}"

command_name="${1:-}"
if [[ "${command_name}" == "airflow" ]]; then
    shift
    command_name="${1:-}"
fi

retry() {
    local what="$1" check="$2" tries="${CONNECTION_CHECK_MAX_COUNT:-20}"
    local pause="${CONNECTION_CHECK_SLEEP_TIME:-3}"
    [[ "${tries}" -gt 0 ]] || return 0
    for ((i = 1; i <= tries; i++)); do
        if eval "${check}" >/dev/null 2>&1; then
            return 0
        fi
        echo "waiting for ${what} (${i}/${tries})" >&2
        sleep "${pause}"
    done
    echo "ERROR: ${what} not reachable after ${tries} tries: ${check}" >&2
    eval "${check}" || true
    exit 1
}

if [[ "${command_name}" != "version" && -n "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" ]]; then
    retry "the metadata database" "airflow db check"
fi
if [[ "${command_name}" =~ ^(scheduler|celery)$ && -n "${AIRFLOW__CELERY__BROKER_URL:-}" ]]; then
    retry "the Celery broker" "python -c 'import os, redis; redis.Redis.from_url(os.environ[\"AIRFLOW__CELERY__BROKER_URL\"]).ping()'"
fi

case "${command_name}" in
    bash) shift; exec /bin/bash "$@" ;;
    python) shift; exec python "$@" ;;
    "") exec /bin/bash ;;
    *) exec airflow "$@" ;;
esac
