"""The run's checkpoint.pt: saved atomically after each epoch, validated before a resume."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from focalbench.utils import atomic_write


class Checkpointer:
    """Saves and restores one run's training state.

    path: where this attempt saves (<run folder>/checkpoint.pt). run_id: the id it stamps into
    each save. accepted: the ids whose checkpoints it resumes (RunConfig.run_ids: today's and the
    first schema's), looked for at `path`, then at `fallbacks` (an older run folder of the same
    config), read-only.
    """

    def __init__(
        self,
        path: Path,
        run_id: str,
        accepted: tuple[str, ...] = (),
        fallbacks: tuple[Path, ...] = (),
    ) -> None:
        self.path, self.run_id = Path(path), run_id
        self.accepted = accepted or (run_id,)
        self.fallbacks = tuple(Path(p) for p in fallbacks)

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        """state: the state dicts to restore ("model", "optimizer", ...), after `epoch` epochs.
        A kill leaves the old checkpoint or the new one, never half of one."""
        full = {"run_id": self.run_id, "epoch": epoch, **state}
        atomic_write(self.path, lambda tmp: torch.save(full, tmp))

    def load(self) -> tuple[dict[str, Any], Path] | None:
        """The last checkpoint of this config and where it was, or None (none yet, or each one
        found is of another config or unreadable: warned, and training starts over)."""
        for path in (self.path, *self.fallbacks):
            state = _read(path, self.accepted)
            if state is not None:
                return state, path
        return None

    def remove_stale(self) -> None:
        """Temporary files of saves cut short by a kill (atomic_write's names)."""
        for stale in self.path.parent.glob(f".{self.path.name}.tmp*"):
            stale.unlink(missing_ok=True)


def _read(path: Path, accepted: tuple[str, ...]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or not a checkpoint: losing it costs time, not results
        warnings.warn(
            f"{path}: unreadable checkpoint ({type(exc).__name__}); starting over", stacklevel=3
        )
        return None
    if not isinstance(state, dict) or state.get("run_id") not in accepted:
        warnings.warn(f"{path}: checkpoint of another config; starting over", stacklevel=3)
        return None
    return state
