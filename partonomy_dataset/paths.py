"""Paths named by source records, resolved inside their source folder: a record never makes the build read (or embed
in the dataset) a file outside the folder it came from, whether by `..`, by an absolute path or through a symlink."""

from __future__ import annotations

import os
from pathlib import Path

from .instances import SkippedRecord

OUTSIDE = "image paths that leave the source folder (refused)"
NO_PATH = "records without a usable image path"


def _under(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def resolve_inside(root, name, folders=(), what: str = "image") -> Path:
    """The file a record's path `name` names inside `root`, after resolving symlinks.

    Candidates, in order: `root/name`, then `root/<folder>/name` and `root/<folder>/<basename>` for each of `folders`.
    An absolute `name` is taken as it is only where it lies inside `root`; elsewhere (the authors' own machine) only
    its basename is looked up in `folders`. Returns the first candidate that is a file, as found (not resolved, so
    that its name is the record's). Raises `SkippedRecord` naming `name` (reason `OUTSIDE`) when a relative `name` climbs
    out of `root`, an absolute one outside it has no file of its name in `folders`, or the file found resolves outside
    `root` (a symlink), or (reason `NO_PATH`) when `name` is not a non-empty string; `FileNotFoundError` when no
    candidate exists.
    """
    if not isinstance(name, str) or not name.strip():
        raise SkippedRecord(NO_PATH, f"{what} path must be a non-empty string, got {name!r}")
    root = Path(root)
    real_root = root.resolve()
    given = Path(name)
    if given.is_absolute():
        absolute = Path(os.path.normpath(given))
        inside = next((base for base in (root.absolute(), real_root) if _under(base, absolute)), None)
        relative = absolute.relative_to(inside) if inside is not None else None
    else:
        relative = Path(os.path.normpath(given))
        if relative.parts[:1] == ("..",):
            raise SkippedRecord(OUTSIDE, f"{what} path {name!r} leaves the source folder {root}")
    candidates = [root / relative] if relative is not None else []
    for folder in folders:
        candidates += [root / folder / relative] if relative is not None else []
        candidates.append(root / folder / given.name)
    for candidate in dict.fromkeys(candidates):
        try:
            if not candidate.is_file():
                continue
            real = candidate.resolve()
        except OSError as error:  # a name too long, a permission ...: not a path this record can use
            raise SkippedRecord(NO_PATH, f"{what} path {name!r} cannot be looked up: {error}") from None
        if not _under(real_root, real):
            raise SkippedRecord(
                OUTSIDE, f"{what} path {name!r} resolves to {real}, outside the source folder {real_root}"
            )
        return candidate
    if relative is None:
        raise SkippedRecord(
            OUTSIDE,
            f"{what} path {name!r} is outside the source folder {root}, and no file of its name is in "
            f"{', '.join(str(root / f) for f in folders) or root}",
        )
    raise FileNotFoundError(f"{what} {name!r} is not under {root} (looked in {len(candidates)} places)")
