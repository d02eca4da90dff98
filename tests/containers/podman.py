"""A podman of the test's own, and the images the container tests build with it when no registry is reachable.

Everything podman keeps (configuration, image and container storage, volumes, networks, its run state)
lives under one temporary directory that `Podman.close` removes; the machine's own storage is never
touched: every command runs with CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and CONTAINERS_REGISTRIES_CONF
pointing into that directory, and `Podman.create` refuses to go on unless podman reports that storage.

No registry is used. The images the project's files name are made here instead:
- a Debian base: `debootstrap --variant=minbase` from the mirror apt already uses, imported with
  `podman import` (the tarball is cached between runs, see `debian_base`);
- a stand-in for `python:3.11-slim-bookworm` (Debian's Python 3.11 on that base), given to
  `podman build --from`, which replaces the Dockerfile's FROM: the Dockerfile is built unchanged;
- a stand-in for `prom/prometheus` with Debian's prometheus binary (the monitoring profile).
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SUITE = "bookworm"
"""The Debian release of the Dockerfile's base image (python:3.11-slim-bookworm)."""
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_IMAGE = f"localhost/relay-test/debian:{SUITE}"
PYTHON_STANDIN = "localhost/relay-test/python:3.11-slim-bookworm"
STANDINS = Path(__file__).resolve().parent / "standins"
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
"""debootstrap and runc live in sbin, which a non-login PATH may lack."""


def which(tool: str) -> str | None:
    return shutil.which(tool, path=f"{os.environ.get('PATH', '')}:{SBIN}")


def cache_dir() -> Path:
    """Where the debootstrap'ed base is kept between runs (remove it to make a fresh one)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "restream-relay-tests"


@dataclass
class Steps:
    """How long each step took, for the closing summary of the run (tests/containers/conftest.py)."""

    seconds: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Figures worth reading beside the times (the image's size)."""

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds.append((name, time.monotonic() - started))


class Podman:
    """Rootful podman confined to `home`: runc (crun refuses hybrid cgroups on this machine kind), limits
    within the machine's hard limits (else runc's setrlimit fails with EPERM), cgroupfs (no systemd),
    netavark (its aardvark-dns lets compose services reach each other by name), no registries."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.storage = home / "storage"
        self.env = {
            **os.environ,
            "PATH": f"{os.environ.get('PATH', '')}:{SBIN}",
            "CONTAINERS_CONF": str(home / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(home / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(home / "registries.conf"),
        }

    @classmethod
    def create(cls) -> Podman:
        podman = cls(Path(tempfile.mkdtemp(prefix="relay-podman-")))
        podman._write_configuration()
        graph_root = podman.run("info", "--format", "{{.Store.GraphRoot}}", timeout=60).strip()
        if Path(graph_root) != podman.storage:
            podman.close()
            raise RuntimeError(f"podman ignores the test's storage.conf (uses {graph_root}): refusing to go on")
        return podman

    def _write_configuration(self) -> None:
        limits = ", ".join(f'"{limit}"' for limit in ulimits())
        (self.home / "containers.conf").write_text(
            "[containers]\n"
            f"default_ulimits = [{limits}]\n"
            'log_driver = "k8s-file"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "none"\n'
            f'tmp_dir = "{self.home / "run" / "libpod"}"\n'
            f'volume_path = "{self.storage / "volumes"}"\n'
            "[network]\n"
            'network_backend = "netavark"\n'  # with aardvark-dns: compose services find each other by name
            f'network_config_dir = "{self.home / "networks"}"\n'
        )
        run_root = self.home / "run" / "storage"
        (self.home / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{self.storage}"\nrunroot = "{run_root}"\n'
        )
        # No registry to search or pull from: a missing image is an error, never a download.
        (self.home / "registries.conf").write_text("unqualified-search-registries = []\n")

    def run(self, *args: str, timeout: float = 120.0, check: bool = True) -> str:
        """`podman ARGS` with our configuration; its stdout (stderr too when it fails)."""
        return run([which("podman") or "podman", *args], env=self.env, timeout=timeout, check=check)

    def logs(self, container: str) -> str:
        """What the container wrote, stdout and stderr (where the relay's log lines go) together."""
        return run([which("podman") or "podman", "logs", container], env=self.env, timeout=60, stderr_too=True)

    def gateway(self, network: str = "podman") -> str:
        """The host's address on a container network: where a container reaches a listener on the host."""
        return self.run("network", "inspect", network, "--format", "{{range .Subnets}}{{.Gateway}} {{end}}").split()[0]

    def close(self) -> None:
        """Remove every container, volume, network and image, then the storage and configuration."""
        if (self.home / "storage.conf").exists() and self.storage.exists():
            for args in (
                ("rm", "--all", "--force", "--time", "0"),
                ("volume", "rm", "--all", "--force"),
                ("network", "prune", "--force"),
                ("rmi", "--all", "--force"),
            ):
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self.run(*args, timeout=120, check=False)
        unmount_under(self.home)
        shutil.rmtree(self.home, ignore_errors=True)


def ulimits() -> list[str]:
    """The containers' open files and processes, at the machine's hard limits: podman's defaults (1048576
    files, 4194304 processes) are above them here. Processes are also capped at pid_max, which is what
    podman lowers its own limit to when it cannot raise it, and runc cannot go above its caller."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    procs = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    with contextlib.suppress(OSError, ValueError):
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        procs = pid_max if procs == resource.RLIM_INFINITY else min(procs, pid_max)
    files = 1048576 if files == resource.RLIM_INFINITY else files
    return [f"nofile={files}:{files}", f"nproc={procs}:{procs}"]


def unmount_under(directory: Path) -> None:
    """Unmount what podman left mounted under `directory` (its overlay storage is a bind mount of itself)."""
    prefix = str(directory.resolve())
    with contextlib.suppress(OSError):
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for point in sorted((p for p in points if p == prefix or p.startswith(prefix + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float,
    check: bool = True,
    stderr_too: bool = False,
) -> str:
    """Run a command to completion within `timeout` seconds; its stdout (with its stderr if `stderr_too`), and
    the output in the error when it fails."""
    result = subprocess.run(
        list(argv),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if stderr_too else subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])} ... exited with {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr or ''}"
        )
    return result.stdout


# --- the images -------------------------------------------------------------------------------------


def apt_mirror(suite: str = SUITE) -> str:
    """The Debian mirror apt already uses for `suite` (/etc/apt/sources.list and sources.list.d, one-line or
    deb822 format); deb.debian.org when none names it."""
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in [*files, *sorted((apt / "sources.list.d").glob("*.sources"))]:
        with contextlib.suppress(OSError):
            text = path.read_text()
            if path.suffix == ".sources":
                for paragraph in text.split("\n\n"):
                    fields = dict(
                        line.split(":", 1) for line in paragraph.splitlines() if ":" in line and line[:1].isalpha()
                    )
                    if "deb" in fields.get("Types", "").split() and suite in fields.get("Suites", "").split():
                        return fields.get("URIs", DEFAULT_MIRROR).split()[0]
            else:
                for line in text.splitlines():
                    words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[")]
                    if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                        return words[1]
    return DEFAULT_MIRROR


SLIM_DPKG = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""
"""What debian:bookworm-slim (under python:3.11-slim) leaves out of every package it installs."""


def debian_base(work: Path, steps: Steps) -> Path:
    """A minimal Debian `SUITE` root filesystem as a tarball, made once and kept in `cache_dir()`.

    Made like the official slim Debian images: no apt lists, no downloaded packages, apt told not to keep
    its package caches (`docker-clean`) and dpkg not to install documentation (`SLIM_DPKG`), so that
    an image built on it is about as big as on the real base. The cache's name says what it holds;
    remove the file to make a fresh one."""
    mirror = apt_mirror()
    tarball = cache_dir() / f"debian-{SUITE}-minbase-slim-{platform.machine()}-v1.tar"
    if tarball.exists():
        return tarball
    rootfs = work / "rootfs"
    with steps.timed(f"debootstrap {SUITE} from {mirror}"):
        run([which("debootstrap") or "debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror], timeout=900)
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    (rootfs / "etc/dpkg/dpkg.cfg.d/docker-slim").write_text(SLIM_DPKG)
    (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n'
    )
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(f".partial-{os.getpid()}")
    run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], timeout=300)
    partial.replace(tarball)  # whole or absent: an interrupted run leaves no half tarball in the cache
    shutil.rmtree(rootfs, ignore_errors=True)
    return tarball


def build_standins(podman: Podman, work: Path, steps: Steps) -> None:
    """The Debian base and the Python stand-in, in `podman`'s storage."""
    tarball = debian_base(work, steps)
    with steps.timed("podman import of the base"):
        podman.run("import", str(tarball), BASE_IMAGE, timeout=300)
    context = work / "python-standin"
    context.mkdir()
    # pip in the build reaches PyPI through whatever TLS the machine's network does (here an inspecting
    # proxy whose CA the host trusts): the stand-in trusts what the host trusts, as a build on it would.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", context / "host-ca.crt")
    shutil.copy(STANDINS / "python.Containerfile", context / "Containerfile")
    with steps.timed("python stand-in"):
        podman.run("build", "--pull=never", "-t", PYTHON_STANDIN, str(context), timeout=600)


def build_prometheus_standin(podman: Podman, image: str, work: Path, steps: Steps) -> None:
    """`image` (the compose file's prometheus) made of Debian's prometheus on the base."""
    context = work / "prometheus-standin"
    context.mkdir()
    shutil.copy("/usr/bin/prometheus", context / "prometheus")
    shutil.copy(STANDINS / "prometheus.Containerfile", context / "Containerfile")
    with steps.timed("prometheus stand-in"):
        podman.run("build", "--pull=never", "-t", image, str(context), timeout=600)
