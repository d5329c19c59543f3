"""A run's checkpoints/ directory: which checkpoints it holds, and restoring the newest one that can be restored.

The checkpoints are found by listing their files (ckpt-<step>.index), not through TensorFlow's state file
`checkpoints/checkpoint`, which a crash or a damaged disk can garble (TensorFlow then reports no checkpoint at
all, and a resume would silently retrain from step 0). A checkpoint that cannot be restored (a truncated or
damaged file: "Read less bytes than requested", "file is too short to be an sstable") is reported by name and the
previous one is tried; when checkpoints exist but none can be restored, the resume is refused (ResumeError), never
silently started again. After a restore and each save the state file is written again, naming the newest
checkpoint, for TensorFlow's own tools (tf.train.latest_checkpoint).

Nothing here follows a link (runner/safe_paths.py): TensorFlow, which writes by path, writes each checkpoint into a
staging folder (checkpoints/.saving-<step>) just created exclusively in checkpoints/, which is checked for links
before each save (a link planted there while the run trains is refused, naming it); the files are then renamed into
checkpoints/, the state file is replaced through a temporary created exclusively, and the older checkpoints are
removed by name (a link is removed, never followed).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import tensorflow as tf

from kfac_repro.runner import safe_paths

log = logging.getLogger("kfac_repro.runner")
FOLDER = "checkpoints"  # in the run directory
KEEP = 2  # the checkpoints kept: the newest ones
STATE = "checkpoint"  # TensorFlow's state file, which names the newest checkpoint
PREFIX = "ckpt"  # the files of the checkpoint of step N: ckpt-N.index and ckpt-N.data-*
_INDEX = re.compile(rf"{PREFIX}-([0-9]+)\.index")
_UNMATCHED = re.compile(r"<tf\.Variable '([^']+)'")  # in TensorFlow's list of objects a checkpoint has no value for
_COUNT = re.compile(r"Showing [0-9]+ of ([0-9]+) unmatched objects")
_FILE = re.compile(rf"{PREFIX}-([0-9]+)\.(index|data-[0-9]+-of-[0-9]+)")


class ResumeError(RuntimeError):
    """A run cannot be continued from what its directory holds (no checkpoint restorable, its rows missing)."""


def checkpoint_steps(directory: Path) -> list[int]:
    """The steps of the checkpoints in `directory` (from their .index files), newest first."""
    if not directory.is_dir():
        return []
    found = (_INDEX.fullmatch(path.name) for path in directory.iterdir())
    return sorted((int(match.group(1)) for match in found if match), reverse=True)


def checkpoint_path(directory: Path, step: int) -> Path:
    """The path prefix of the checkpoint of `step` (what tf.train.Checkpoint.restore takes)."""
    return directory / f"{PREFIX}-{step}"


def save(checkpoint: tf.train.Checkpoint, run_dir: Path, step: int) -> None:
    """Write `checkpoint` as the checkpoint of `step` in run_dir/checkpoints (see the module docstring) and keep
    the KEEP newest checkpoints up to `step` (later ones belong to a run that was resumed from an earlier one)."""
    folder = Path(FOLDER)
    safe_paths.refuse_links(run_dir, folder)
    staging = folder / f".saving-{step}"
    safe_paths.remove(run_dir, staging)  # left by a crash during a save
    safe_paths.make_dir_exclusively(run_dir, staging)
    checkpoint.save_counter.assign_add(1)  # as tf.train.Checkpoint.save counts (and saves) them
    checkpoint.write(str(run_dir / staging / f"{PREFIX}-{step}"))
    for name in sorted(path.name for path in (run_dir / staging).iterdir()):
        safe_paths.rename(run_dir, staging / name, folder / name)
    safe_paths.remove(run_dir, staging)
    kept = [s for s in checkpoint_steps(run_dir / folder) if s <= step][:KEEP]
    for path in (run_dir / folder).iterdir():
        match = _FILE.fullmatch(path.name)
        if match and int(match.group(1)) not in kept:
            safe_paths.remove(run_dir, folder / path.name)
    _write_state(run_dir, step)


def restore_newest(checkpoint: tf.train.Checkpoint, run_dir: Path, own: bool = True) -> int | None:
    """Restore the newest checkpoint in run_dir/checkpoints that restores whole (every object of `checkpoint`
    matched; it may hold more, such as the data position that `restore_part` reads), warning with the name and
    error of each newer one that does not; its step, or None if there is none.
    ResumeError naming every checkpoint and its error when there are some but none restores. `own`: the
    checkpoints are this process's (the state file is rewritten), not another worker's (read only)."""
    directory = run_dir / FOLDER
    failures: list[str] = []
    for step in checkpoint_steps(directory):
        path = checkpoint_path(directory, step)
        try:
            checkpoint.restore(str(path)).expect_partial().assert_existing_objects_matched()
        except (tf.errors.OpError, IndexError, ValueError, AssertionError) as error:
            failures.append(f"{path}: {_describe(error)}")
            log.warning("checkpoint %s cannot be restored (%s): falling back to the previous one", path,
                        _describe(error))
            continue
        if own:
            _write_state(run_dir, step)
        return step
    if failures:
        raise ResumeError("no checkpoint of this run can be restored: " + "; ".join(failures) +
                          " (damaged, or written for another model or optimizer, or by an older version of "
                          "kfac-repro whose checkpoints hold other variables). Start a new run (without --resume)")
    return None


def holds(directory: Path, step: int, name: str) -> bool:
    """Whether the checkpoint of `step` has an entry `name` at its root."""
    return any(key.split("/", 1)[0] == name
               for key, _ in tf.train.list_variables(str(checkpoint_path(directory, step))))


def restore_part(checkpoint: tf.train.Checkpoint, directory: Path, step: int) -> None:
    """Restore the objects of `checkpoint` (a part of what was saved) from the checkpoint of `step`."""
    checkpoint.restore(str(checkpoint_path(directory, step))).expect_partial().assert_existing_objects_matched()


def _write_state(run_dir: Path, step: int) -> None:
    """TensorFlow's state file naming the checkpoint of `step` as the newest, after the older ones still there."""
    kept = [s for s in sorted(checkpoint_steps(run_dir / FOLDER)) if s <= step]
    lines = [f'model_checkpoint_path: "{PREFIX}-{step}"',
             *(f'all_model_checkpoint_paths: "{PREFIX}-{s}"' for s in kept)]
    safe_paths.write_atomic(run_dir, Path(FOLDER) / STATE, "\n".join(lines) + "\n")


def _describe(error: Any) -> str:
    """What is wrong with a checkpoint, in one line: the variables it has no value for (TensorFlow lists them as
    unmatched objects), else the first line of the error (a shape that differs names the variable)."""
    message = error.message if isinstance(error, tf.errors.OpError) else str(error)
    missing = _UNMATCHED.findall(message) if isinstance(error, AssertionError) else []
    if missing:
        count = _COUNT.search(message)
        more = f" (of {count.group(1)} in all)" if count and int(count.group(1)) > len(missing) else ""
        return f"it holds no value for {', '.join(sorted(missing))}{more}"
    first = message.strip().splitlines()[0] if message.strip() else ""
    return f"{type(error).__name__}: {first}"
