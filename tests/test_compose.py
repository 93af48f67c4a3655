"""docker-compose.yml and the Dockerfile: valid, and naming only commands and files that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from orchestrator.cli.main import main

PROJECT = Path(__file__).resolve().parents[1]
COMPOSE = PROJECT / "docker-compose.yml"
DOCKERFILE = PROJECT / "Dockerfile"

#: Files the compose file mounts that each lab writes for itself (README, "A physical lab").
WRITTEN_BY_THE_LAB = {"./lab.yaml"}
#: Packages of scripts/bootstrap the image does not need.
#: Packages of the development host, not of the image: the compose check, the simulated Echo's
#: voice (the image drives physical Echos), the browser test's Chromium, and the traffic tests'
#: resolver and namespaces.
HOST_ONLY_PACKAGES = {"docker-compose", "festival", "festvox-us-slt-hts", "chromium", "chromium-driver",
                      "dnsmasq-base", "iproute2"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def test_docker_compose_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (scripts/bootstrap installs it)")
    result = subprocess.run([binary, "-f", str(COMPOSE), "config"], cwd=PROJECT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert set(resolved) == {"scheduler", "web"}
    assert resolved["web"]["ports"] == ["127.0.0.1:8001:8001/tcp"]
    assert all(volume.endswith(":ro") for volume in resolved["web"]["volumes"])
    assert "/dev/snd:/dev/snd" in resolved["scheduler"]["devices"]


def test_the_web_view_is_published_on_loopback_only() -> None:
    for name, service in services().items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping} beyond this machine"


@pytest.mark.parametrize("service", ["scheduler", "web"])
def test_every_service_runs_a_command_of_the_cli(service: str) -> None:
    program, name, *args = services()[service]["command"]
    assert program == "orchestrator"
    ctx = click.Context(main)
    assert name in main.list_commands(ctx), f"docker-compose.yml runs `orchestrator {name}`, which does not exist"
    command = main.get_command(ctx, name)
    try:
        command.make_context(name, list(args))
    except click.ClickException as exc:
        pytest.fail(f"`orchestrator {name} {' '.join(args)}`: {exc.format_message()}")


def test_the_scheduler_gets_time_to_stop_cleanly() -> None:
    grace = services()["scheduler"]["stop_grace_period"]
    seconds = float(re.fullmatch(r"(\d+)s", grace).group(1))  # type: ignore[union-attr]
    serve = main.get_command(click.Context(main), "serve")
    (stop_timeout,) = [p.default for p in serve.params if p.name == "stop_timeout"]
    assert seconds > stop_timeout


def test_every_project_path_it_names_exists() -> None:
    named: list[str] = []
    for service in services().values():
        build = service["build"]
        context = build if isinstance(build, str) else build["context"]
        named.append(context)
        named.append(str(Path(context) / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict)
                                          else "Dockerfile")))
        named += [volume.split(":")[0] for volume in service.get("volumes", [])
                  if volume.startswith((".", "/")) and not volume.startswith(("/dev/", "/run/"))]
    project_paths = [path for path in named if path.startswith(".")]
    assert "./persona_scripts" in project_paths
    for path in project_paths:
        assert (PROJECT / path).exists() or path in WRITTEN_BY_THE_LAB, f"{path} does not exist"
    assert "lab.yaml" in (PROJECT / "README.md").read_text()


def bootstrap_packages() -> set[str]:
    text = (PROJECT / "scripts" / "bootstrap").read_text()
    block = re.search(r"APT_PACKAGES=\((.*?)\n\)", text, re.S)
    assert block is not None
    return {word for line in block.group(1).splitlines() for word in line.split("#")[0].split()}


def dockerfile_packages() -> set[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    install = re.search(r"apt-get install (.*?)(&&|$)", text, re.M)
    assert install is not None
    return {word for word in install.group(1).split() if not word.startswith("-")}


def test_the_image_has_the_system_packages_of_bootstrap() -> None:
    assert DOCKERFILE.read_text().startswith("# ") and "FROM python:3.11-slim" in DOCKERFILE.read_text()
    assert "docker-compose" in bootstrap_packages()
    assert dockerfile_packages() == bootstrap_packages() - HOST_ONLY_PACKAGES
