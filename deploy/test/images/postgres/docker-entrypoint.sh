#!/usr/bin/env bash
# The official postgres image's environment contract, for the compose test's stand-in image:
#   - POSTGRES_PASSWORD is required (no trust auth over TCP); POSTGRES_USER (default postgres) is
#     the superuser, POSTGRES_DB (default: the user's name) is created
#   - on the first start of an empty $PGDATA: initdb, then every /docker-entrypoint-initdb.d/
#     file in name order (*.sh run if executable, sourced otherwise; *.sql through psql) while
#     the server listens on its unix socket only, then the real server on every address
#   - the server runs as the `postgres` user; clients over TCP sign in with scram-sha-256
set -euo pipefail

if [[ "$(id -u)" == "0" ]]; then
    mkdir -p "${PGDATA}" /var/run/postgresql
    chown -R postgres:postgres "${PGDATA}" /var/run/postgresql
    chmod 0700 "${PGDATA}"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set (the official image refuses to start without it)}"
export POSTGRES_USER="${POSTGRES_USER:-postgres}"
export POSTGRES_DB="${POSTGRES_DB:-${POSTGRES_USER}}"

if [[ "${1:-}" == "postgres" && ! -s "${PGDATA}/PG_VERSION" ]]; then
    initdb --username="${POSTGRES_USER}" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD}") \
        --auth-local=trust --auth-host=scram-sha-256 -D "${PGDATA}" >/dev/null
    printf 'host all all all scram-sha-256\n' >>"${PGDATA}/pg_hba.conf"
    pg_ctl -D "${PGDATA}" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" -w start >/dev/null
    if [[ "${POSTGRES_DB}" != "postgres" ]]; then
        psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER}" --dbname postgres \
            -v db="${POSTGRES_DB}" <<<'CREATE DATABASE :"db";'
    fi
    for script in /docker-entrypoint-initdb.d/*; do
        [[ -e "${script}" ]] || continue
        case "${script}" in
            *.sh)
                if [[ -x "${script}" ]]; then "${script}"; else . "${script}"; fi ;;
            *.sql)
                psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB}" -f "${script}" ;;
            *) echo "ignoring ${script}" ;;
        esac
    done
    pg_ctl -D "${PGDATA}" -m fast -w stop >/dev/null
    echo "PostgreSQL init process complete; ready for start up."
fi

if [[ "${1:-}" == "postgres" ]]; then
    shift
    exec postgres -D "${PGDATA}" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
fi
exec "$@"
