"""deploy/k8s/Dockerfile, checked without a Docker engine.

What can be checked here: every path it copies exists and holds what the wheel needs, its uv is the
Makefile's and its uv commands install what the Makefile installs (frozen lock, compiled bytecode),
the image runs as a non-root user and leaves run pods their own command, and its install steps,
replayed with the same uv, the same flags and only the copied files, give an environment in which
both code locations load from outside the source tree.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest

from tests.deploy.conftest import K8S, ROOT

DOCKERFILE = K8S / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    """Instructions split per FROM."""
    split: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            split.append([])
        if split:
            split[-1].append((keyword, rest))
    return split


def build_copies() -> list[str]:
    """Source paths of the build stage's COPY instructions (from the build context)."""
    sources = []
    for keyword, rest in stages()[0]:
        if keyword == "COPY" and "--from" not in rest:
            sources += shlex.split(rest)[:-1]
    return sources


def uv_commands() -> list[list[str]]:
    """Every `uv ...` command the Dockerfile runs."""
    return [
        shlex.split(rest) for keyword, rest in instructions() if keyword == "RUN" and rest.startswith("uv ")
    ]


def test_every_copied_path_exists():
    for source in build_copies():
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


def test_the_copies_hold_every_package_the_wheel_builds():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    assert packages <= set(build_copies())
    assert {"pyproject.toml", "uv.lock", pyproject["project"]["readme"]} <= set(build_copies())


def test_uv_is_the_makefiles_and_installs_the_same_way():
    makefile = (ROOT / "Makefile").read_text()
    version = re.search(r"^UV_VERSION := (\S+)", makefile, re.M).group(1)
    pip = [rest for keyword, rest in instructions() if keyword == "RUN" and "pip install" in rest]
    assert pip == [f"pip install --no-cache-dir uv=={version}"]
    make_sync = shlex.split(re.search(r"\$\(UV\) (sync .*)", makefile).group(1))
    env = " ".join(rest for keyword, rest in stages()[0] if keyword == "ENV")
    assert "UV_COMPILE_BYTECODE=1" in env  # = the Makefile's --compile-bytecode
    assert "--compile-bytecode" in make_sync
    commands = uv_commands()
    assert len(commands) == 2
    for command in commands:
        assert command[:2] == ["uv", "sync"]
        assert "--frozen" in command and "--frozen" in make_sync  # the lock, never re-resolved
        assert "--no-dev" in command  # no test tools in the image
        assert command[command.index("--group") + 1] == "k8s"
    assert "--no-install-project" in commands[0] and "--no-editable" in commands[1]


def test_the_k8s_group_brings_the_launcher_compute_log_and_warehouse_libraries():
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    names = {re.split(r"[=<>~ ]", requirement)[0] for requirement in groups["k8s"]}
    # s3fs: the manifests' WAREHOUSE_DIR is s3://, which UPath reads and writes through it.
    assert names == {"dagster-k8s", "dagster-aws", "s3fs"}
    assert {"include-group": "k8s"} in groups["dev"]


def test_runs_as_a_non_root_user_with_no_entrypoint():
    runtime = stages()[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    # Run and step pods set only `args`; an ENTRYPOINT would swallow them.
    assert not [rest for keyword, rest in instructions() if keyword == "ENTRYPOINT"]
    command = [rest for keyword, rest in runtime if keyword == "CMD"][-1]
    assert command.startswith('["dagster", "api", "grpc"')


def test_runtime_code_never_calls_the_openssl_cli():
    # The image leaves the openssl CLI out; that holds while no runtime module starts a process.
    for package in ("pricing_assets", "orders_assets", "resources"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            imported = {
                alias.name.split(".")[0]
                for node in ast.walk(tree)
                if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
            }
            assert "subprocess" not in imported, f"{path.relative_to(ROOT)} starts processes"
            assert "openssl" not in {
                node.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and node.value == "openssl"
            }, path


def uv_binary() -> str:
    """The Makefile's uv (installed by `make venv`)."""
    found = ROOT / ".tools" / "bin" / "uv"
    return str(found) if found.exists() else (shutil.which("uv") or pytest.skip("no uv on this machine"))


def test_the_image_install_steps_give_an_environment_that_loads_both_locations(tmp_path):
    context = tmp_path / "src"
    context.mkdir()
    venv = tmp_path / "venv"
    env = {**os.environ}
    for keyword, rest in stages()[0]:
        if keyword == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(rest))
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)  # /opt/venv in the image
    env["UV_PYTHON"] = sys.executable  # the image's only python; here, this interpreter
    for keyword, rest in stages()[0]:
        if keyword == "COPY":
            *sources, _ = shlex.split(rest)
            for source in sources:
                if (ROOT / source).is_dir():
                    shutil.copytree(
                        ROOT / source, context / source, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy(ROOT / source, context / source)
        if keyword == "RUN" and rest.startswith("uv "):
            command = [uv_binary(), *shlex.split(rest)[1:], "--quiet"]
            subprocess.run(command, cwd=context, env=env, check=True, timeout=600)
    shutil.rmtree(context)  # the image's runtime stage has no sources, only the environment
    probe = (
        "import importlib.util, dagster_k8s, dagster_aws;"
        "import pricing_assets.definitions, orders_assets.definitions;"
        "assert importlib.util.find_spec('pytest') is None;"
        "print(pricing_assets.definitions.__file__)"
    )
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    done = subprocess.run(
        [str(python), "-W", "ignore", "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "site-packages" in done.stdout  # installed, not read from a source checkout
    compiled = list((venv / "lib").glob("python3.*/site-packages/pricing_assets/__pycache__/*.pyc"))
    assert compiled, "bytecode was not compiled at install"
