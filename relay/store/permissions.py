"""The database's files are private to the relay: they hold every tenant's stream tokens, SRT
passphrases and destination keys in clear.

The directory is made 0700 and the database 0600 before SQLite opens it; SQLite gives the `-wal` and
`-shm` files it creates the mode of the database, so they are 0600 too, whatever the umask (a umask
change would be process-wide, and other threads create files). A directory or file left readable by
others by an older version, `cp` or a volume mount is tightened at start, and one log line says
what changed. Files owned by another user are left alone with a warning: chmod would fail without
privileges, and a root relay should not take over what an operator set up on purpose.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("relay.store")

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")
"""SQLite's companions of a database file, which hold the same data."""


def make_private(database: Path) -> None:
    """Create the database's directory and file private, or tighten them; never loosens anything."""
    directory = database.parent
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    try:
        # O_EXCL: only a file we create gets our mode; an empty file is an empty SQLite database.
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass
    tightened: list[str] = []
    foreign: list[str] = []
    targets = [(directory, DIRECTORY_MODE), (database, FILE_MODE)]
    targets += [(database.with_name(database.name + suffix), FILE_MODE) for suffix in SIDE_FILES]
    for path, private in targets:
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if not mode & 0o077:
            continue
        if info.st_uid != os.geteuid():
            foreign.append(f"{path} (mode {mode:04o}, owner uid {info.st_uid})")
            continue
        os.chmod(path, mode & private)
        tightened.append(f"{path} {mode:04o} -> {mode & private:04o}")
    if tightened:
        log.warning("tightened permissions of the database (it holds every client's secrets): %s", ", ".join(tightened))
    if foreign:
        log.warning(
            "the database's files are readable by other users and owned by another user than this relay (uid %d),"
            " so left as they are: %s; make them %04o/%04o or run the relay as their owner",
            os.geteuid(),
            ", ".join(foreign),
            DIRECTORY_MODE,
            FILE_MODE,
        )
