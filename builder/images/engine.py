"""The Docker engine adapter: connect, ask whether it has an image, save one, copy an image's files out.

Images are written by swcli itself (:mod:`builder.images.build`) and loaded by :mod:`builder.images.daemon`; no
`docker build` runs. Errors become :class:`~builder.errors.DockerError` one-liners.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from builder.errors import DockerError, SwcliError

NO_ENGINE_HINT = ("start one (Debian: apt-get install docker.io, then `dockerd &` as root) or pass --no-image to build "
                  "the package only")


def connect(timeout: int = 60):
    """A docker client whose daemon answered a ping; a one-line DockerError otherwise."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as err:
        reason = str(err).split("(")[0].strip() or type(err).__name__
        raise DockerError(f"no Docker engine answers ({reason}); {NO_ENGINE_HINT}") from None
    return client


def image_exists(client, ref: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


def save_image(client, ref: str, path: Path) -> Path:
    """``docker save`` to a file (a docker-archive tar skopeo can inspect)."""
    with open(path, "wb") as fh:
        for chunk in client.images.get(ref).save(named=True):
            fh.write(chunk)
    return path


class CopyOutError(SwcliError):
    """The folder to copy an image's files into cannot take them (a file, a non-empty folder)."""


def check_target(directory: Path) -> Path:
    """``directory`` must be absent or an empty folder: one line naming it otherwise. Checked before any work."""
    directory = Path(directory)
    if directory.is_symlink():
        raise CopyOutError(f"{directory}: is a symbolic link; copy into a new folder")
    if directory.exists() and not directory.is_dir():
        raise CopyOutError(f"{directory}: is a file, not a folder; copy into a new folder")
    if directory.is_dir() and any(directory.iterdir()):
        raise CopyOutError(f"{directory}: is not empty; copy into a new folder")
    return directory


def apply_umask(root: Path) -> None:
    """Give ``root`` and everything below it the modes a plain ``mkdir``/``open`` would: folders and executables
    0777 & ~umask, other files 0666 & ~umask (mkdtemp's 0700 and an image's modes would lock other users out,
    e.g. a container run as ``--user 1000:1000`` reading a mounted export). Links are left as they are."""
    from builder.files import current_umask

    mask = current_umask()
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, (0o777 if st.st_mode & 0o111 else 0o666) & ~mask)


def _explain(err) -> str:
    return " ".join(str(getattr(err, "explanation", None) or err).split())


def copy_out(client, image: str, path: str, directory: Path) -> int:
    """Copy the folder ``path`` of ``image`` into ``directory`` (new or empty); returns the files written.

    Goes through a created (never started) container and `get_archive`, streamed to a temp file, and unpacks
    into a sibling temp folder renamed into place, so a failure leaves no half-copied folder. Only regular files,
    folders and links are unpacked, through tarfile's "data" filter, so an image cannot write or point outside
    ``directory``. Modes follow the umask (:func:`apply_umask`).
    """
    import shutil
    import tarfile
    import tempfile

    from docker.errors import APIError, DockerException

    directory = check_target(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        container = client.containers.create(image, command=["true"])
    except (APIError, DockerException) as err:
        raise DockerError(f"{image}: cannot copy {path} out: {_explain(err)}") from None
    staging = Path(tempfile.mkdtemp(prefix=".swcli-copy-", dir=directory.parent))
    try:
        with tempfile.TemporaryFile() as tar_file:
            try:
                stream, _ = container.get_archive(f"{path.rstrip('/')}/.")
                for chunk in stream:
                    tar_file.write(chunk)
            except (APIError, DockerException) as err:
                raise DockerError(f"{image}: cannot copy {path} out: {_explain(err)}") from None
            tar_file.seek(0)
            with tarfile.open(fileobj=tar_file) as tar:
                members = [m for m in tar.getmembers() if m.isfile() or m.isdir() or m.issym() or m.islnk()]
                tar.extractall(staging, members=members, filter="data")
        apply_umask(staging)
        check_target(directory)  # still absent or empty: nothing of someone else's is replaced
        if directory.exists():
            directory.rmdir()
        staging.rename(directory)  # `get_archive("X/.")` names X's entries "./...": staging is X's copy
        return sum(1 for p in directory.rglob("*") if p.is_file())
    finally:
        container.remove(v=True, force=True)  # v: a dataset image's VOLUME /dataset gets an anonymous copy
        shutil.rmtree(staging, ignore_errors=True)
