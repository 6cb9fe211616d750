"""Durable writes shared by the corpus job and the search index: flushing files and folders to disk."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "fsync_file"]


def fsync_file(path: Path) -> None:
    """Flush a file's contents to disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the file system allows."""
    try:
        fsync_file(folder)
    except OSError:  # not every file system lets a folder be synced
        pass
