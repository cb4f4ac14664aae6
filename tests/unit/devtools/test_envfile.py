"""envfile: `.env` from `.env.example` with fresh secrets (`make env`); never overwrites."""

from __future__ import annotations

import base64
import stat
import string
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from mlops_pipeline.devtools import envfile
from mlops_pipeline.devtools.envfile import (
    SECRETS,
    EnvFileError,
    fernet_key,
    random_token,
    render_env,
    write_env,
)

REPO = Path(__file__).resolve().parents[3]
ALPHANUMERIC = set(string.ascii_letters + string.digits)


def parse(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def template_with_all_secrets(**values: str) -> str:
    lines = ["# a comment that stays", "PORT=8080"]
    lines += [f"{name}={values.get(name, '')}" for name in SECRETS]
    return "\n".join(lines) + "\n"


# --- the generators ---


def test_fernet_key_is_valid_for_airflow() -> None:
    key = fernet_key()
    assert len(base64.urlsafe_b64decode(key)) == 32
    token = Fernet(key.encode()).encrypt(b"connection password")
    assert Fernet(key.encode()).decrypt(token) == b"connection password"


def test_random_token_is_alphanumeric_of_the_asked_length() -> None:
    token = random_token(500)
    assert len(token) == 500 and set(token) <= ALPHANUMERIC
    assert random_token(32) != random_token(32)


def test_random_token_refuses_a_useless_length() -> None:
    with pytest.raises(ValueError, match="positive"):
        random_token(0)


def test_secrets_fit_what_each_service_accepts() -> None:
    values = {name: make() for name, make in SECRETS.items()}
    for name in ("MINIO_ROOT_USER", "S3_ACCESS_KEY_ID"):
        assert len(values[name]) == 20 and set(values[name]) <= set(string.ascii_uppercase + string.digits)
    for name in ("MINIO_ROOT_PASSWORD", "S3_SECRET_ACCESS_KEY"):
        assert 8 <= len(values[name]) <= 40  # MinIO's limits
    for name in ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_PIPELINE_PASSWORD"):
        assert len(values[name]) >= 12  # MLflow's password policy
    for name, value in values.items():
        if name != "AIRFLOW_FERNET_KEY":
            # safe unquoted in .env, URLs and shells; never read as a CLI option
            assert set(value) <= ALPHANUMERIC, name
        assert len(value) >= 20, name
    assert len(set(values.values())) == len(values)  # no value reused between settings


# --- render_env ---


def test_render_fills_every_empty_secret_and_keeps_everything_else() -> None:
    rendered = render_env(template_with_all_secrets())

    values = parse(rendered)
    assert rendered.startswith("# a comment that stays\nPORT=8080\n")
    assert all(values[name] for name in SECRETS)
    assert rendered.endswith("\n") and len(rendered.splitlines()) == len(SECRETS) + 2


def test_render_keeps_a_secret_the_template_sets() -> None:
    rendered = render_env(template_with_all_secrets(REDIS_PASSWORD="chosen-by-hand"))
    assert parse(rendered)["REDIS_PASSWORD"] == "chosen-by-hand"


def test_render_gives_new_secrets_each_time() -> None:
    first, second = (parse(render_env(template_with_all_secrets())) for _ in range(2))
    assert all(first[name] != second[name] for name in SECRETS)


def test_render_keeps_crlf_line_endings() -> None:
    rendered = render_env(template_with_all_secrets().replace("\n", "\r\n"))
    assert rendered.count("\r\n") == len(SECRETS) + 2


def test_render_refuses_a_template_without_a_secret_setting() -> None:
    template = template_with_all_secrets().replace("AIRFLOW_FERNET_KEY=\n", "")
    with pytest.raises(EnvFileError, match="AIRFLOW_FERNET_KEY"):
        render_env(template)


def test_the_real_template_holds_every_secret_empty() -> None:
    values = parse((REPO / ".env.example").read_text())
    assert {name: values.get(name) for name in SECRETS} == dict.fromkeys(SECRETS, "")
    rendered = parse(render_env((REPO / ".env.example").read_text()))
    assert all(rendered[name] for name in SECRETS)


# --- write_env and the command line ---


def test_write_creates_a_private_file(tmp_path: Path) -> None:
    example = tmp_path / "example"
    example.write_text(template_with_all_secrets())

    written = write_env(example, tmp_path / ".env")

    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert all(parse(written.read_text())[name] for name in SECRETS)


def test_write_never_overwrites(tmp_path: Path) -> None:
    example = tmp_path / "example"
    example.write_text(template_with_all_secrets())
    existing = tmp_path / ".env"
    existing.write_text("POSTGRES_PASSWORD=the-only-copy\n")

    with pytest.raises(EnvFileError, match="not overwriting"):
        write_env(example, existing)
    assert existing.read_text() == "POSTGRES_PASSWORD=the-only-copy\n"


def test_write_names_a_missing_template(tmp_path: Path) -> None:
    with pytest.raises(EnvFileError, match="not found"):
        write_env(tmp_path / "nope", tmp_path / ".env")
    assert not (tmp_path / ".env").exists()


def test_main_reports_success_and_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = tmp_path / "example"
    example.write_text(template_with_all_secrets())
    output = tmp_path / ".env"

    assert envfile.main(["--example", str(example), "--output", str(output)]) == 0
    assert "mode 600" in capsys.readouterr().out
    assert envfile.main(["--example", str(example), "--output", str(output)]) == 1
    assert "not overwriting" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        # what `make env` runs: the file as a script with the system's python3, no virtualenv
        ["python3", str(REPO / "include/mlops_pipeline/devtools/envfile.py")],
        [sys.executable, "-m", "mlops_pipeline.devtools.envfile"],
    ],
    ids=["make-env-script", "module"],
)
def test_command_line_entry_points(command: list[str], tmp_path: Path) -> None:
    output = tmp_path / ".env"
    args = ["--example", str(REPO / ".env.example"), "--output", str(output)]

    first = subprocess.run(command + args, capture_output=True, text=True, timeout=60, check=False)
    second = subprocess.run(command + args, capture_output=True, text=True, timeout=60, check=False)

    assert first.returncode == 0, first.stderr
    assert all(parse(output.read_text())[name] for name in SECRETS)
    assert second.returncode == 1 and "not overwriting" in second.stderr
