"""Write `.env` from `.env.example` with fresh random secrets: `make env`, or
`python -m mlops_pipeline.devtools.envfile [--example PATH] [--output PATH]`.

The template is copied line by line; each secret setting that is empty in it (see `SECRETS`) gets
a new random value, every other line (comments, ports, settings left empty on purpose) is kept
as it is. An existing `.env` is never overwritten: it may hold the only copy of the passwords of a
running stack's databases. The file is created with mode 600.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_ALPHANUMERIC = string.ascii_letters + string.digits
_SETTING = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


def random_token(length: int, alphabet: str = _ALPHANUMERIC) -> str:
    """`length` characters drawn with `secrets` from `alphabet`.

    Letters and digits only by default: safe unquoted in .env files, shells, YAML and URLs
    (database and broker URLs embed passwords), and never starting with `-`, which a CLI such as
    `airflow users create --password` would take for an option.
    """
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    return "".join(secrets.choice(alphabet) for _ in range(length))


def fernet_key() -> str:
    """A valid Fernet key, as Airflow's `[core] fernet_key` expects: urlsafe base64 of 32 random bytes."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def _password() -> str:
    return random_token(32)  # ~190 bits


def _signing_key() -> str:
    return random_token(64)  # ~380 bits, for HMAC (JWT HS512) and session signing


def _access_key_id() -> str:
    # S3 access keys: 3-20 characters for MinIO users; AWS-style upper case and digits.
    return random_token(20, string.ascii_uppercase + string.digits)


def _secret_access_key() -> str:
    return random_token(40)  # MinIO accepts 8-40 characters


# Every secret setting of .env.example and how to make one. `render_env` refuses a template that
# lacks one of them, so this table and the template cannot drift apart silently.
SECRETS: Mapping[str, Callable[[], str]] = {
    # the embedded demo (`make demo`) and the compose stack's Airflow admin
    "AIRFLOW_ADMIN_PASSWORD": _password,
    "AIRFLOW_VIEWER_PASSWORD": _password,
    # the compose stack (docker-compose.yaml)
    "AIRFLOW_FERNET_KEY": fernet_key,
    "AIRFLOW_JWT_SECRET": _signing_key,
    "AIRFLOW_API_SECRET_KEY": _signing_key,
    "POSTGRES_PASSWORD": _password,
    "AIRFLOW_DB_PASSWORD": _password,
    "MLFLOW_DB_PASSWORD": _password,
    "REDIS_PASSWORD": _password,
    "MINIO_ROOT_USER": _access_key_id,
    "MINIO_ROOT_PASSWORD": _secret_access_key,
    "S3_ACCESS_KEY_ID": _access_key_id,
    "S3_SECRET_ACCESS_KEY": _secret_access_key,
    "MLFLOW_ADMIN_PASSWORD": _password,
    "MLFLOW_PIPELINE_PASSWORD": _password,
    "MLFLOW_FLASK_SECRET_KEY": _signing_key,
    # the compose stack's profile `monitoring`
    "GRAFANA_ADMIN_PASSWORD": _password,
}


class EnvFileError(RuntimeError):
    """`.env` could not be written; the message says why and what to do."""


def render_env(template: str, generators: Mapping[str, Callable[[], str]] = SECRETS) -> str:
    """The template with a fresh value for every secret setting it leaves empty.

    A secret that already has a value in the template is kept (a deliberate choice of whoever
    edited it). Raises `EnvFileError` when a setting of `generators` is missing from the template.
    """
    seen: set[str] = set()
    lines = []
    for line in template.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        match = _SETTING.match(body)
        if match and match["key"] in generators:
            key = match["key"]
            seen.add(key)
            if not match["value"].strip():
                line = f"{key}={generators[key]()}{line[len(body) :]}"
        lines.append(line)
    missing = sorted(set(generators) - seen)
    if missing:
        raise EnvFileError(f"the template has no line for: {', '.join(missing)}")
    return "".join(lines)


def with_settings(text: str, settings: Mapping[str, str]) -> str:
    """The .env `text` with each setting of `settings` given its value (in place; appended if absent)."""
    remaining = dict(settings)
    lines = []
    for line in text.splitlines(keepends=True):
        match = _SETTING.match(line.rstrip("\r\n"))
        if match and match["key"] in remaining:
            line = f"{match['key']}={remaining.pop(match['key'])}\n"
        lines.append(line)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines += [f"{key}={value}\n" for key, value in remaining.items()]
    return "".join(lines)


def write_env(example: Path, output: Path) -> Path:
    """Write `output` from the template `example` with new secrets; never overwrite an existing file.

    Created exclusively (O_EXCL) with mode 600, so a concurrent run cannot clobber it either.
    """
    if output.exists():
        raise EnvFileError(
            f"{output} exists; not overwriting it (it may hold the only copy of a running stack's "
            "passwords). Move it away first to generate a new one."
        )
    if not example.is_file():
        raise EnvFileError(f"template {example} not found")
    content = render_env(example.read_text(encoding="utf-8"))
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise EnvFileError(f"{output} exists; not overwriting it") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: 0 when written, 1 when refused (existing file, bad template)."""
    parser = argparse.ArgumentParser(
        prog="python -m mlops_pipeline.devtools.envfile",
        description="Write .env from .env.example with fresh random secrets (never overwrites).",
    )
    parser.add_argument("--example", type=Path, default=Path(".env.example"), help="template (.env.example)")
    parser.add_argument("--output", type=Path, default=Path(".env"), help="file to create (.env)")
    args = parser.parse_args(argv)
    try:
        written = write_env(args.example, args.output)
    except EnvFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {written} (mode 600) with {len(SECRETS)} new secrets; keep it out of version control")
    return 0


if __name__ == "__main__":
    sys.exit(main())
