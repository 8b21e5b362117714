"""The controller's image, built here from the repository's Dockerfile with no image registry.

The base is a Debian root filesystem made with mmdebstrap from the Debian archives this
machine already uses (its release's Python and venv), imported into podman; the Dockerfile
builds on it through `ARG BASE` (elsewhere it builds `FROM python:...`). What comes out is a
docker archive a node's containerd imports, together with the pod sandbox's pause image.

Everything is cached in ~/.cache/oneclick/images, keyed by its inputs: the base by release,
packages and archive sources; the controller image by the base, the Dockerfile and every file
its COPY lines take; pause by its binary. An unchanged input is never rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import yaml

from oneclick.controlplane.binaries import BuildError, cache_root, ensure_binaries, file_lock
from oneclick.controlplane.podman import Podman, PodmanError

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
CHART = REPO / "charts" / "oneclick" / "Chart.yaml"
REPOSITORY = "docker.io/oneclick/occ-controller"  # the chart's image.repository, normalised
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Documentation, manuals and translations stay out of the base, as in the slim python images.
_EXCLUDED = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
             "/usr/share/lintian/*")
_SKIPPED = ("__pycache__", ".pyc", ".mypy_cache", ".egg-info")


class ImageError(BuildError):
    """An image could not be built; the message says which step and its tool's own words."""


@dataclass(frozen=True)
class Image:
    reference: str
    archive: Path  # docker archive, for `ctr images import`
    built: bool  # False: found in the cache


def images_dir() -> Path:
    return cache_root() / "images"


def _lock() -> AbstractContextManager[None]:
    """One image build at a time per cache (a test session and a developer, say)."""
    return file_lock(images_dir())


def _say(message: str, log: bool) -> None:
    if log:
        print(message, file=sys.stderr)


# -- the base ----------------------------------------------------------------------------------

def debian_sources() -> tuple[str, list[str]]:
    """(release code name, sources.list lines) of the Debian archives apt uses here."""
    policy = subprocess.run(["apt-cache", "policy"], capture_output=True, text=True,
                            check=False).stdout
    lines: list[str] = []
    codename = ""
    entry: list[str] = []
    for line in policy.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0].isdigit() and fields[-1] == "Packages":
            entry = fields  # e.g. 500 http://mirror/debian bookworm/main amd64 Packages
        elif fields[:1] == ["release"] and entry and "o=Debian," in line and "/" in entry[2]:
            suite, component = entry[2].split("/", 1)
            lines.append(f"deb {entry[1]} {suite} {component}")
            if match := re.search(r"\bn=([a-z]+)(?:,|$)", line):
                codename = codename or match.group(1)
            entry = []
    if not codename or not lines:
        raise ImageError("no Debian archive is configured for apt here (apt-cache policy "
                         "lists none with o=Debian): the base image is made from one")
    return codename, sorted(set(lines))


def base_image(podman: Podman, log: bool = True) -> str:
    """The base image's reference in podman, made (and cached) if needed."""
    codename, sources = debian_sources()
    key = _digest([codename, *BASE_PACKAGES, *sources, *_EXCLUDED])
    reference = f"localhost/oneclick/base:{codename}-{key}"
    rootfs = images_dir() / f"base-{codename}-{key}.tar"
    if not rootfs.is_file():
        _say(f"making the base root filesystem (Debian {codename}: "
             f"{', '.join(BASE_PACKAGES)}) ...", log)
        started = time.monotonic()
        partial = rootfs.with_suffix(".partial")
        with tempfile.NamedTemporaryFile("w", suffix=".list") as listing:
            listing.write("\n".join(sources) + "\n")
            listing.flush()
            result = subprocess.run(
                ["mmdebstrap", "--mode=root", "--variant=minbase", "--format=tar",
                 f"--include={','.join(BASE_PACKAGES)}",
                 *(f"--dpkgopt=path-exclude={path}" for path in _EXCLUDED),
                 codename, str(partial), listing.name],
                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise ImageError(f"mmdebstrap {codename} failed (exit {result.returncode}):\n"
                             f"{result.stderr[-4000:]}")
        partial.rename(rootfs)
        _say(f"made the base in {time.monotonic() - started:.0f}s", log)
    if not podman.exists(reference):
        podman.run("import", "--change", 'CMD ["python3"]', str(rootfs), reference)
    return reference


# -- the controller ----------------------------------------------------------------------------

def context_paths(dockerfile: Path = DOCKERFILE) -> list[str]:
    """What the Dockerfile's COPY lines take from the build context (not from a stage)."""
    paths: list[str] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            paths.extend(words[1:-1])
    return paths


def _context_files(paths: list[str]) -> list[Path]:
    """Files and symbolic links (kept as links, as docker's context keeps them: the agent's
    distribution links to its sources in oneclick/)."""
    files: list[Path] = []
    for name in paths:
        path = REPO / name
        found = sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink()
                       ) if path.is_dir() else [path]
        files.extend(p for p in found if not any(s in p.as_posix() for s in _SKIPPED))
    return files


def _content(path: Path) -> bytes:
    return f"-> {path.readlink()}".encode() if path.is_symlink() else path.read_bytes()


def _digest(parts: list[str], files: list[Path] | None = None) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() + b"\0")
    for path in files or []:
        h.update(path.relative_to(REPO).as_posix().encode() + b"\0" + _content(path))
    return h.hexdigest()[:12]


def version() -> str:
    """The chart's appVersion: the tag its Deployment asks for by default."""
    return str(yaml.safe_load(CHART.read_text())["appVersion"])


def controller_image(log: bool = True) -> Image:
    """The controller's image as a docker archive, built if its inputs changed."""
    if not DOCKERFILE.is_file():
        raise ImageError(f"{DOCKERFILE}: no Dockerfile (the image is built from a checkout of "
                         "the repository)")
    podman = Podman.cached()
    reference = f"{REPOSITORY}:{version()}"
    files = _context_files(context_paths())
    with _lock():
        base = base_image(podman, log)
        key = _digest([base, reference], [DOCKERFILE, *files])
        archive = images_dir() / f"occ-controller-{version()}-{key}.tar"
        if archive.is_file():
            return Image(reference, archive, built=False)
        _say(f"building {reference} from {DOCKERFILE.name} on {base} ...", log)
        started = time.monotonic()
        build_log = images_dir() / "occ-controller.log"
        build_log.write_text("")
        try:
            with tempfile.TemporaryDirectory(prefix="occ-image-") as context:
                for path in [DOCKERFILE, *files]:
                    target = Path(context) / path.relative_to(REPO)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target, follow_symlinks=False)
                # The build reaches the package index as this machine does (its trust store,
                # which may hold a proxy's CA) without that store entering the image.
                # No layer cache: with vfs each cached layer is a whole copy of the root
                # filesystem (twice the time, gigabytes); the archive is the cache.
                podman.run("build", "--pull=never", "--network=host", "--layers=false",
                           "--build-arg", f"BASE={base}", "--volume",
                           "/etc/ssl/certs:/etc/ssl/certs:ro", "--tag", reference, context,
                           log=build_log)
            _save(podman, reference, archive, build_log)
        except PodmanError as error:
            raise ImageError(f"building {reference} failed (log: {build_log}): {error}"
                             ) from error
        for old in images_dir().glob("occ-controller-*.tar"):
            if old != archive:
                old.unlink()
        podman.run("image", "prune", "--force")  # earlier builds' layers
        _say(f"built {reference} in {time.monotonic() - started:.0f}s", log)
    return Image(reference, archive, built=True)


def _save(podman: Podman, reference: str, archive: Path, log: Path | None = None) -> None:
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    podman.run("save", "--format", "docker-archive", "--output", str(partial), reference, log=log)
    partial.rename(archive)  # whole or absent


# -- pause -------------------------------------------------------------------------------------

def pause_image(log: bool = True) -> Image:
    """The pod sandbox's image: our static pause binary alone
    (oneclick/controlplane/gomod/node/pause)."""
    binary = ensure_binaries(log)["pause"]
    key = hashlib.sha256(binary.read_bytes()).hexdigest()[:12]
    reference = f"localhost/oneclick/pause:{key}"
    archive = images_dir() / f"pause-{key}.tar"
    with _lock():
        if archive.is_file():
            return Image(reference, archive, built=False)
        podman = Podman.cached()
        rootfs = images_dir() / f"pause-{key}.rootfs.tar"
        with tarfile.open(rootfs, "w") as tar:
            info = tarfile.TarInfo("pause")
            info.size, info.mode = binary.stat().st_size, 0o755
            tar.addfile(info, io.BytesIO(binary.read_bytes()))
        try:
            podman.run("import", "--change", 'ENTRYPOINT ["/pause"]', str(rootfs), reference)
            _save(podman, reference, archive)
        finally:
            rootfs.unlink(missing_ok=True)
    return Image(reference, archive, built=True)
