"""The rendezvous file `<store>.serve.json`: how a CLI run finds the server of its store.

Written by the server (port, pid, token, store realpath; mode 0600, so only its owner reads the token)
and removed on exit. A reader trusts it only when it is a regular file of the current user that nobody
else can write, names this store, and its pid is alive; otherwise it is ignored (a stale file left by a
killed server just means "run locally")."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

API_VERSION = 1
SUFFIX = ".serve.json"


@dataclass(frozen=True)
class Rendezvous:
    host: str  # the address a client connects to
    port: int
    pid: int
    token: str
    store: str  # realpath of the store
    api: int = API_VERSION

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def path_for(store: str | os.PathLike) -> Path:
    real = Path(os.path.realpath(store))
    return real.with_name(real.name + SUFFIX)


def write(rv: Rendezvous) -> Path:
    """Write the file for rv.store (replacing a stale one), readable by its owner only."""
    path = path_for(rv.store)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if os.path.lexists(tmp):  # left by a crash of a process with this pid
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(rv), f)
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return path


def remove(rv: Rendezvous) -> None:
    """Remove the file if it is still this server's (a newer server may have replaced it)."""
    path = path_for(rv.store)
    current = _load(path)
    if current is not None and current.token == rv.token:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def find(store: str | os.PathLike) -> tuple[Rendezvous | None, str]:
    """(the live server's rendezvous for this store, or None; why not, in words)."""
    path = path_for(store)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None, "no server running for this store"
    except OSError as e:
        return None, f"cannot read {path}: {e.strerror}"
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None, f"ignoring {path}: not a private file of this user"
    rv = _load(path)
    if rv is None:
        return None, f"ignoring {path}: unreadable"
    if rv.api != API_VERSION:
        return None, f"ignoring {path}: written by another saeembed version"
    if rv.store != os.path.realpath(store):
        return None, f"ignoring {path}: it is for {rv.store}"
    if not pid_alive(rv.pid):
        return None, f"stale {path}: server pid {rv.pid} is gone"
    return rv, ""


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    except OSError:
        return False
    return True


def _load(path: Path) -> Rendezvous | None:
    try:
        data = json.loads(path.read_text())
        return Rendezvous(host=str(data["host"]), port=int(data["port"]), pid=int(data["pid"]),
                          token=str(data["token"]), store=str(data["store"]), api=int(data.get("api", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
