"""The production-like stack's files: docker-compose.yaml, Dockerfile, .env.example, deploy/.

These tests check everything that can be checked without a Docker engine (test_compose_up.py
builds and runs the stack for real): `docker-compose config` parses the file with a `.env` made by `make env` (Debian's docker-compose
is installed with apt when missing), the file also validates against the Compose specification's
JSON schema (`compose_spec.json`, from docker/compose 1.29.2, Apache-2.0), and the rules of the
stack: every variable documented, secrets only from .env, a production auth manager, health
checks, memory limits, read-only code mounts, the image's Airflow version equal to the lock's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_pipeline.devtools.compose_stack import locked_version
from mlops_pipeline.devtools.envfile import SECRETS, render_env
from mlops_pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
SCHEMA = Path(__file__).with_name("compose_spec.json")

ONE_SHOT_SERVICES = {"airflow-init", "minio-init", "mlflow-init"}
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
# The profile `monitoring`: started only with `--profile monitoring`.
MONITORING_SERVICES = {"pushgateway", "statsd-exporter", "prometheus", "grafana"}
ALL_SERVICES = (
    AIRFLOW_SERVICES
    | {"postgres", "redis", "minio", "minio-init", "mlflow", "mlflow-init"}
    | MONITORING_SERVICES
)
CODE_MOUNTS = {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"}

# `$$` (an escaped dollar) first, so `$${HOSTNAME}` is never read as a variable.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


# ---------------------------------------------------------------------------------------------
# Helpers and fixtures
# ---------------------------------------------------------------------------------------------


def parse_env(text: str) -> dict[str, str]:
    """KEY=value lines of an env file (no quoting is used in .env.example)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: ${V}, ${V:-default}, ${V-default}, ${V:?err}, ${V?err}, $$."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op and op.endswith("-") and unset:
            return arg
        if op and op.endswith("?") and unset:
            raise ValueError(f"required variable {name} is missing: {arg}")
        return value or ""

    return _VARIABLE.sub(substitute, text)


def strings(node: Any) -> list[str]:
    """Every string value (and mapping key) of a parsed YAML document: where compose substitutes."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in strings(key) + strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in strings(item)]
    return []


def substitute_all(node: Any, env: Mapping[str, str]) -> Any:
    """The parsed document with every string interpolated, as compose does (comments are not)."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {substitute_all(key, env): substitute_all(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [substitute_all(item, env) for item in node]
    return node


def raw_compose() -> dict[str, Any]:
    """The compose file as committed, anchors merged, nothing substituted."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def variables_used() -> set[str]:
    """Names of every variable the compose file substitutes."""
    return {
        m["name"] or m["bare"]
        for text in strings(raw_compose())
        for m in _VARIABLE.finditer(text)
        if not m["escaped"]
    }


@pytest.fixture(scope="module")
def generated_env() -> dict[str, str]:
    """What `make env` would write: .env.example with fresh secrets."""
    return parse_env(render_env(ENV_EXAMPLE.read_text()))


@pytest.fixture(scope="module")
def compose(generated_env: dict[str, str]) -> dict[str, Any]:
    """The compose file as compose would see it with the generated .env (anchors merged)."""
    return substitute_all(raw_compose(), generated_env)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="session")
def docker_compose() -> str:
    """Debian's docker-compose (1.x: it validates and resolves the file without an engine).

    Installed with apt-get when missing (`apt-get update` only if the first try fails). Skips
    only when it cannot be installed; the schema test below still covers the file then.
    """
    found = shutil.which("docker-compose")
    if found is None and shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker-compose"]
        for command in (install, ["apt-get", "update", "-q"], install):
            subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)
            found = shutil.which("docker-compose")
            if found:
                break
    if found is None:
        pytest.skip("docker-compose is not installed and apt-get could not install it")
    return found


def run_compose_config(binary: str, env_file: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` on the repository's file with `env_file`, in a clean environment."""
    return subprocess.run(
        [
            binary,
            "--project-directory",
            str(REPO),
            "--file",
            str(COMPOSE_FILE),
            "--env-file",
            str(env_file),
            "config",
        ],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# The file parses
# ---------------------------------------------------------------------------------------------


def test_docker_compose_config_parses_with_generated_env(docker_compose: str, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(render_env(ENV_EXAMPLE.read_text()))

    result = run_compose_config(docker_compose, env_file, tmp_path)

    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == ALL_SERVICES
    assert "${" not in result.stdout.replace("$${", "")


def test_docker_compose_refuses_a_missing_secret(docker_compose: str, tmp_path: Path) -> None:
    template = render_env(ENV_EXAMPLE.read_text())
    env_file = tmp_path / ".env"
    env_file.write_text(re.sub(r"(?m)^AIRFLOW_FERNET_KEY=.*$", "AIRFLOW_FERNET_KEY=", template))

    result = run_compose_config(docker_compose, env_file, tmp_path)

    assert result.returncode != 0
    assert "AIRFLOW_FERNET_KEY" in result.stderr


def test_file_validates_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    # The schema's keys are strings; YAML would give ints for e.g. `retries: 5` (fine) and keeps
    # strings for ports and env values, as compose does.
    jsonschema.validate(compose, schema)


def test_every_required_secret_is_required_by_compose(generated_env: dict[str, str]) -> None:
    """Removing any secret `make env` generates for the stack makes substitution fail."""
    used = variables_used()
    assert set(SECRETS) - used == {"AIRFLOW_VIEWER_PASSWORD"}  # the demo's only
    for name in sorted(set(SECRETS) & used):
        env = {**generated_env, name: ""}
        with pytest.raises(ValueError, match=name):
            substitute_all(raw_compose(), env)


# ---------------------------------------------------------------------------------------------
# Settings and paths
# ---------------------------------------------------------------------------------------------


def test_every_variable_is_documented_in_env_example() -> None:
    """Each ${VAR} has a KEY= line in .env.example under a comment (shared by a block of keys)."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    keys = {line.split("=", 1)[0]: index for index, line in enumerate(lines) if re.match(r"^\w+=", line)}
    missing = sorted(variables_used() - set(keys))
    assert not missing, f"not in .env.example: {missing}"
    for name in variables_used():
        index = keys[name] - 1
        while index >= 0 and re.match(r"^\w+=", lines[index]):
            index -= 1
        assert index >= 0 and lines[index].startswith("# ") and len(lines[index]) > 3, (
            f"{name} in .env.example has no comment above it"
        )


def test_env_example_holds_no_secret_values() -> None:
    values = parse_env(ENV_EXAMPLE.read_text())
    assert {name: values[name] for name in SECRETS if values.get(name)} == {}


def test_every_mounted_host_path_exists(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"


def test_only_the_monitoring_services_are_in_a_profile(services: dict[str, dict[str, Any]]) -> None:
    profiled = {name: service["profiles"] for name, service in services.items() if "profiles" in service}
    assert profiled == {name: ["monitoring"] for name in MONITORING_SERVICES}


def test_the_runs_push_to_the_profiles_pushgateway_which_prometheus_scrapes(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    for name in AIRFLOW_SERVICES:
        assert services[name]["environment"]["MLOPS_PUSHGATEWAY_URL"] == "http://pushgateway:9091"
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["pushgateway"]["honor_labels"] is True
    assert jobs["pushgateway"]["static_configs"] == [{"targets": ["pushgateway:9091"]}]
    assert jobs["airflow"]["static_configs"] == [{"targets": ["statsd-exporter:9102"]}]
    # The rules file is mounted where the configuration looks for it; promtool checks both
    # (with the path on this machine).
    mounts = dict(
        volume.split(":")[:2] for volume in services["prometheus"]["volumes"] if volume.startswith(".")
    )
    assert mounts["./deploy/prometheus/alerts.yml"] == config["rule_files"][0]
    from mlops_pipeline.devtools.docker_engine import ensure_debian_packages
    from mlops_pipeline.devtools.prometheus_servers import PROMETHEUS_PACKAGES

    ensure_debian_packages(PROMETHEUS_PACKAGES)
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump({**config, "rule_files": [str(REPO / "deploy/prometheus/alerts.yml")]}))
    check = subprocess.run(["promtool", "check", "config", str(local)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_is_provisioned_with_the_shipped_dashboard(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"] if volume.startswith("."))
    assert mounts == {
        "./deploy/grafana/provisioning": "/etc/grafana/provisioning",
        "./deploy/grafana/dashboards": "/var/lib/grafana/dashboards",
    }
    provider = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/mlops.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (REPO / "deploy/grafana/dashboards" / Path(home).name).exists()
    assert len(grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]) >= 20  # from `make env`, required


def test_pipeline_settings_reach_the_airflow_services(services: dict[str, dict[str, Any]]) -> None:
    """Same variable names as the native stack: the ones mlops_pipeline.settings reads."""
    settings_names = {
        (field.validation_alias if isinstance(field.validation_alias, str) else f"MLOPS_{name.upper()}")
        for name, field in Settings.model_fields.items()
    }
    assert {"MLOPS_STORE_URI", "MLFLOW_TRACKING_URI", "MLOPS_S3_ENDPOINT_URL"} <= settings_names
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["MLOPS_STORE_URI"].startswith("s3://"), name
        assert env["MLOPS_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["MLFLOW_TRACKING_USERNAME"] and env["MLFLOW_TRACKING_PASSWORD"]
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
        assert env["MLOPS_MODELS_DIR"] == "/opt/airflow/include/models"


def test_airflow_options_exist_in_airflow_config(services: dict[str, dict[str, Any]]) -> None:
    """Every AIRFLOW__SECTION__KEY names a real option (a typo would be silently ignored)."""
    spec = find_spec("airflow")
    assert spec is not None and spec.submodule_search_locations
    config_yml = Path(next(iter(spec.submodule_search_locations))) / "config_templates" / "config.yml"
    known = {
        section: set(body.get("options", {}))
        for section, body in yaml.safe_load(config_yml.read_text()).items()
    }
    for provider in metadata.entry_points(group="apache_airflow_provider"):
        for section, body in (provider.load()().get("config") or {}).items():
            known.setdefault(section, set()).update(body.get("options", {}))
    checked = 0
    for name in AIRFLOW_SERVICES:
        for variable in services[name]["environment"]:
            if not variable.startswith("AIRFLOW__"):
                continue
            section, option = (part.lower() for part in variable.removeprefix("AIRFLOW__").split("__", 1))
            if section not in known:
                continue  # a provider this environment lacks (checked where it is installed)
            assert option in known[section], f"{variable}: no option {option!r} in [{section}]"
            checked += 1
    assert checked


# ---------------------------------------------------------------------------------------------
# The image
# ---------------------------------------------------------------------------------------------


def test_image_airflow_version_is_the_locked_one() -> None:
    airflow = locked_version(REPO, "apache-airflow")
    python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    python_minor = re.search(r"3\.\d+", python)
    assert python_minor is not None
    dockerfile = DOCKERFILE.read_text()
    default_base = re.search(r"(?m)^ARG AIRFLOW_BASE_IMAGE=(\S+)$", dockerfile)
    assert default_base, "the Dockerfile names no default AIRFLOW_BASE_IMAGE"
    assert default_base.group(1) == f"apache/airflow:{airflow}-python{python_minor.group(0)}"
    froms = re.findall(r"(?m)^FROM\s+(\S+)", dockerfile)
    assert froms, "no FROM in the Dockerfile"
    for image in froms:
        assert image == "${AIRFLOW_BASE_IMAGE}", image


def test_image_installs_from_the_lock_not_at_start() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert "uv export --frozen --no-dev" in dockerfile
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in dockerfile
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in COMPOSE_FILE.read_text()
    makefile_uv = re.search(r"(?m)^UV_VERSION := (\S+)", (REPO / "Makefile").read_text())
    dockerfile_uv = re.search(r"(?m)^ARG UV_VERSION=(\S+)", dockerfile)
    assert makefile_uv and dockerfile_uv and makefile_uv.group(1) == dockerfile_uv.group(1)


def test_stack_requirements_are_pinned_and_provide_the_fab_auth_manager() -> None:
    pins = [
        line
        for line in (REPO / "deploy/airflow/stack-requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert pins and all(re.fullmatch(r"[a-z0-9-]+(\[[a-z0-9,-]+\])?==[\w.]+", pin) for pin in pins), pins
    names = {pin.split("==")[0] for pin in pins}
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked = {entry["name"] for entry in lock["package"]}
    assert "apache-airflow-providers-fab" in names | locked


def test_dockerignore_keeps_secrets_and_the_venv_out_of_the_build() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if not line.startswith("#")]
    assert lines[0] == "*"  # an allow-list: everything not named below stays out
    assert not any(line.startswith("!") and (".env" in line or ".venv" in line) for line in lines)


# ---------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------


def test_services_are_the_stack(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == ALL_SERVICES
    one_shots = {name for name, service in services.items() if service.get("restart") == "no"}
    assert one_shots == ONE_SHOT_SERVICES


def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT_SERVICES:
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no health check"


def test_dependencies_wait_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for target, rule in depends_on.items():
            expected = "service_completed_successfully" if target in ONE_SHOT_SERVICES else "service_healthy"
            assert rule == {"condition": expected}, f"{name} -> {target}: {rule}"


def test_workers_are_scalable_with_a_memory_limit(services: dict[str, dict[str, Any]]) -> None:
    worker = services["airflow-worker"]
    assert "container_name" not in worker
    limit = worker.get("mem_limit") or worker.get("deploy", {}).get("resources", {}).get("limits", {}).get(
        "memory"
    )
    assert limit and re.fullmatch(r"\d+[kmg]", str(limit).lower()), limit
    assert worker["command"] == "celery worker"
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_code_is_mounted_read_only(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_SERVICES:
        mounts = {}
        for volume in services[name]["volumes"]:
            source, target, *mode = volume.split(":")
            mounts[target] = (source, mode)
        for target in CODE_MOUNTS:
            assert target in mounts, f"{name} does not mount {target}"
            source, mode = mounts[target]
            assert source == f"./{Path(target).name}" and mode == ["ro"], f"{name}: {target} {mode}"


def test_auth_manager_is_fab_not_simple(services: dict[str, dict[str, Any]]) -> None:
    assert not [text for text in strings(raw_compose()) if "SimpleAuthManager" in text]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert (
            env["AIRFLOW__CORE__AUTH_MANAGER"]
            == "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
        )
        assert env["AIRFLOW__API__EXPOSE_STACKTRACE"] == "False"
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"


def test_airflow_secrets_come_from_env(
    services: dict[str, dict[str, Any]], generated_env: dict[str, str]
) -> None:
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__FERNET_KEY"] == generated_env["AIRFLOW_FERNET_KEY"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == generated_env["AIRFLOW_JWT_SECRET"]
    assert env["AIRFLOW__API__SECRET_KEY"] == generated_env["AIRFLOW_API_SECRET_KEY"]
    assert generated_env["AIRFLOW_DB_PASSWORD"] in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert generated_env["REDIS_PASSWORD"] in env["AIRFLOW__CELERY__BROKER_URL"]


def test_mlflow_server_is_authenticated_and_proxies_artifacts_to_minio(
    services: dict[str, dict[str, Any]],
) -> None:
    mlflow = services["mlflow"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"]
    options = dict(part.split("=", 1) for part in command[2:] if "=" in part)
    assert options["--app-name"] == "basic-auth"
    assert options["--allowed-hosts"] and options["--allowed-hosts"] != "*"
    assert options["--artifacts-destination"].startswith("s3://")
    assert options["--backend-store-uri"].startswith("postgresql+psycopg2://mlflow@postgres")
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert (REPO / "deploy/mlflow/basic_auth.ini").read_text().count(
        "postgresql+psycopg2://mlflow@postgres"
    ) == 1


def test_postgres_init_script_creates_separate_databases(services: dict[str, dict[str, Any]]) -> None:
    mounts = services["postgres"]["volumes"]
    assert any(m.startswith("./deploy/postgres/") and "/docker-entrypoint-initdb.d/" in m for m in mounts)
    script = (REPO / "deploy/postgres/init-databases.sh").read_text()
    for database, owner in (("airflow", "airflow"), ("mlflow", "mlflow"), ("mlflow_auth", "mlflow")):
        assert f"CREATE DATABASE {database} OWNER {owner};" in script


# ---------------------------------------------------------------------------------------------
# No literal secrets
# ---------------------------------------------------------------------------------------------

_SECRET_NAME = re.compile(r"(?i)(password|secret|_key\b|_key_id\b|token|fernet)")
_FULL_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}$")


def test_no_literal_secret_in_the_compose_file() -> None:
    raw = raw_compose()  # not interpolated: the text as committed
    text = COMPOSE_FILE.read_text()
    for name, service in raw["services"].items():
        environment = service.get("environment") or {}
        for key, value in environment.items():
            if _SECRET_NAME.search(key) and key != "MLFLOW_AUTH_CONFIG_PATH":
                assert _FULL_REFERENCE.match(str(value)), f"{name}: {key} is not taken from .env"
    # Credentials inside URLs: user:password@host must take the password from a variable.
    for user, password in re.findall(r"://([^:/@\s]*):([^@\s]*)@", text):
        assert password == "" or password.startswith("${"), f"literal password for {user!r} in a URL"
    # password=..., key=... written out anywhere (commands, comments).
    literal = re.compile(
        r"(?i)\b\w*(password|passwd|secret|key)\w*\s*[=:]\s*[\"']?(?![\"'$\s{])[^\s\"',]{6,}"
    )
    offending = [
        line
        for line in text.splitlines()
        if literal.search(line) and "${" not in line and "$$" not in line and "CONFIG_PATH" not in line
    ]
    assert offending == []


def test_no_literal_secret_in_deploy_files() -> None:
    # A quoted literal, or a bare token to the end of the line (ini style), after password=/secret=.
    literal = re.compile(r"(?i)\w*(password|secret)\w*\s*=\s*([\"'][^\"'$]+[\"']|[A-Za-z0-9+/_-]{8,}\s*$)")
    for path in (REPO / "deploy").rglob("*"):
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.lstrip().startswith("#"):
                    continue
                assert not literal.search(line), f"{path.relative_to(REPO)}: {line}"


# ---------------------------------------------------------------------------------------------
# The compose test's override file (deploy/test/docker-compose.local.yaml)
# ---------------------------------------------------------------------------------------------

OVERRIDE_FILE = REPO / "deploy/test/docker-compose.local.yaml"
# What the override may change per service: images only, and the S3 server's own start and check.
OVERRIDE_MAY_CHANGE = {
    "postgres": {"image"},
    "redis": {"image"},
    "minio": {"image", "command", "healthcheck"},
    "minio-init": {"image", "entrypoint"},
}


def test_the_override_changes_images_only(services: dict[str, dict[str, Any]]) -> None:
    override = yaml.safe_load(OVERRIDE_FILE.read_text())["services"]
    # The compose test runs without the profile `monitoring` (no stand-in for Grafana can be
    # built where no image can be pulled): it needs no stand-ins for that profile.
    assert set(override) == set(services) - MONITORING_SERVICES
    for name, changes in override.items():
        if "build" in services[name]:
            # The project's image, built FROM a stand-in base on the host's network.
            assert set(changes) == {"build"}, name
            assert set(changes["build"]) <= {"context", "network", "args"}, name
            assert set(changes["build"]["args"]) == {"AIRFLOW_BASE_IMAGE"}, name
        else:
            assert set(changes) <= OVERRIDE_MAY_CHANGE[name], name


def test_docker_compose_config_parses_with_the_override(docker_compose: str, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(render_env(ENV_EXAMPLE.read_text()))
    result = subprocess.run(
        [docker_compose, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), "-f", str(OVERRIDE_FILE),
         "--env-file", str(env_file), "config"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    merged = yaml.safe_load(result.stdout)["services"]
    assert merged["airflow-worker"]["build"]["args"]["AIRFLOW_BASE_IMAGE"].startswith("local/airflow-base:")
    assert merged["postgres"]["image"].startswith("local/")
    # The compose file's own settings survive the merge: health check, memory limit, init script.
    assert merged["postgres"]["healthcheck"]["test"] == services_healthcheck("postgres")
    assert "10-init-databases.sh" in " ".join(str(v) for v in merged["postgres"]["volumes"])


def services_healthcheck(name: str) -> Any:
    return raw_compose()["services"][name]["healthcheck"]["test"]


def test_the_airflow_stand_in_keeps_the_official_images_conventions() -> None:
    dockerfile = (REPO / "deploy/test/images/airflow-base/Dockerfile").read_text()
    assert "useradd --uid 50000 --gid 0" in dockerfile
    assert "AIRFLOW_HOME=/opt/airflow" in dockerfile
    assert 'ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]' in dockerfile
    assert "USER airflow" in dockerfile
