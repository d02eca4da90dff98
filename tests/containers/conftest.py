"""The container tests' podman and images, made once per run; skipped, with the reason, where podman cannot run.

`make test` runs these where scripts/system-deps.sh could install podman, debootstrap and runc (as root);
`make test-containers` runs them alone. The time of each step is printed at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.containers.podman import PYTHON_STANDIN, Podman, Steps, build_standins, which
from tests.support import ROOT

RELAY_IMAGE = "localhost/restream-relay:latest"
"""The project's image as the tests build it; the compose file's `restream-relay:latest` resolves to it."""

STEPS = pytest.StashKey[Steps]()


def unavailable() -> str | None:
    """Why podman cannot run the tests here, or None."""
    if os.geteuid() != 0:
        return "the container tests run rootful podman: run them as root (CI does)"
    missing = [tool for tool in ("podman", "debootstrap", "runc", "tar") if which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (`scripts/system-deps.sh test`, as root, installs them)"
    return None


@pytest.fixture(scope="session")
def steps(request: pytest.FixtureRequest) -> Steps:
    """The timed steps of this run, printed by `pytest_terminal_summary`."""
    return request.config.stash.setdefault(STEPS, Steps())


@pytest.fixture(scope="package")
def podman(steps: Steps) -> Iterator[Podman]:
    """A podman with its own configuration and storage under a temporary directory, removed after the last
    container test. Package scope, not session: a session fixture is torn down after the run's last test,
    which may be unmarked, and tests/conftest.py refuses subprocesses there (the clean-up's podman)."""
    if reason := unavailable():
        pytest.skip(reason)
    instance = Podman.create()
    try:
        yield instance
    finally:
        with steps.timed("clean-up (containers, volumes, networks, images, storage)"):
            instance.close()


@pytest.fixture(scope="package")
def relay_image(podman: Podman, steps: Steps, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The project's Dockerfile, unchanged, built on the Python stand-in; its size goes to the summary."""
    build_standins(podman, tmp_path_factory.mktemp("images"), steps)
    with steps.timed("podman build of the Dockerfile"):
        podman.run("build", "--pull=never", "--from", PYTHON_STANDIN, "-t", RELAY_IMAGE, str(ROOT), timeout=900)
    size = int(podman.run("image", "inspect", RELAY_IMAGE, "--format", "{{.Size}}").strip())
    steps.notes.append(f"image {RELAY_IMAGE}: {size / 1e6:.0f} MB (on the Python stand-in)")
    return RELAY_IMAGE


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    steps = config.stash.get(STEPS, None)
    if steps is None or not (steps.seconds or steps.notes):
        return
    terminalreporter.section("container tests: steps")
    for name, seconds in steps.seconds:
        terminalreporter.write_line(f"{seconds:7.1f} s  {name}")
    for note in steps.notes:
        terminalreporter.write_line(note)
