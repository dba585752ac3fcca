"""Checkpoints of a generated JAX program, on orbax. Runtime support, copied verbatim.

One checkpoint per saved step, OUT/checkpoints/<step>/:

    state/   parameters and optimizer state as the sharded arrays they are in training (OCDBT +
             tensorstore; each process writes the shards it holds, and a restore places each
             shard straight onto the device the mesh gives it)
    meta/    JSON: the step, the seed, the data position (examples seen), the tokenizer (data.py's
             identity of it), and the program's spec digest and spec.yaml text
             (flags.run_identity): --resume checks them

Nothing else is needed to resume: batch `step` of the data is a function of (seed, step) (see
data.py) and the step's randomness is fold_in(key(seed + 1), step), so a resumed run sees the
same batches and the same noise as an uninterrupted one and, on CPU, computes the same bits.

Saves are atomic: orbax writes a checkpoint into <step>.orbax-checkpoint-tmp/, writes
commit_success.txt into it, and only then renames it to <step>/. A process killed during a save
leaves the temporary directory behind, which latest_step() ignores and the next run deletes: the
previous checkpoint stays the latest. Saves are asynchronous: save() returns once the arrays are
copied to host memory and the files are written in the background while training goes on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


class _FailedWrites(logging.Filter):
    """Drops orbax's log records of a file it could not write (an OSError from its save threads,
    logged with the traceback by each thread it passes through): the training loop stops on that
    error with one line naming the file (metrics.stop_writing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, OSError) and error.filename is not None)


_FAILED_WRITES = _FailedWrites()  # one instance: addFilter then adds it once however many Checkpoints


class Checkpoints:
    """The checkpoints of one run: keep the newest `keep`, save, find the latest, restore."""

    def __init__(self, directory: Path, keep: int) -> None:
        import orbax.checkpoint as ocp

        self.directory = directory.absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            cleanup_tmp_directories=True,  # what a killed save left behind
            enable_async_checkpointing=True,
        )
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        self.closed = False
        logging.getLogger("absl").addFilter(_FAILED_WRITES)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step (temporary directories of unfinished saves are not)."""
        step = self.manager.latest_step()
        return None if step is None else int(step)

    def previous(self, step: int) -> int | None:
        """The newest checkpoint before `step`, if any."""
        earlier = [int(found) for found in self.manager.all_steps() if int(found) < step]
        return max(earlier) if earlier else None

    def save(self, step: int, params: Any, opt_state: Any, meta: dict[str, Any]) -> None:
        """Start saving; the arrays may be donated to the next step as soon as this returns."""
        import orbax.checkpoint as ocp

        state = ocp.args.StandardSave({"params": params, "opt_state": opt_state})
        self.manager.save(step, args=ocp.args.Composite(state=state, meta=ocp.args.JsonSave(meta)))

    def meta(self, step: int) -> dict[str, Any]:
        """The JSON record of checkpoint `step`, read without its arrays."""
        import orbax.checkpoint as ocp

        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored.meta)

    def shapes(self, step: int) -> dict[str, tuple[int, ...]]:
        """The global shape of each parameter saved in checkpoint `step` (from its metadata, no arrays read)."""
        params = self.manager.item_metadata(step)["state"]["params"]
        return {name: tuple(array.shape) for name, array in params.items()}

    def restore(self, step: int, params: Any, opt_state: Any) -> tuple[Any, Any]:
        """The saved state of `step`, placed like `params` and `opt_state` (shapes, dtypes, shardings)."""
        import jax
        import orbax.checkpoint as ocp

        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": opt_state})
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        except ValueError as error:
            if "tree structures do not match" not in str(error):
                raise
            return self._restore_chained(step, target)
        return restored.state["params"], restored.state["opt_state"]

    def _restore_chained(self, step: int, target: dict[str, Any]) -> tuple[Any, Any]:
        """A checkpoint of an earlier switchc's program, whose optimizer chained optax's clipping when
        clip_grad_norm > 0: its state was optax.chain's, (clipping's empty state, the optimizer's).
        Read in that layout; the optimizer's part is this program's state."""
        import optax
        import orbax.checkpoint as ocp

        chained = {"params": target["params"], "opt_state": (optax.EmptyState(), target["opt_state"])}
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(chained)))
        return restored.state["params"], restored.state["opt_state"][1]

    def wait(self) -> None:
        """Block until a save in flight is committed (or has failed)."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Wait for a save in flight to be committed, then release the manager (once)."""
        if self.closed:
            return
        self.closed = True
        self.manager.wait_until_finished()
        self.manager.close()

    def committed_steps(self) -> list[int]:
        """The steps of the committed checkpoints, read from the directory (a save in flight has a
        temporary name until its commit)."""
        if not self.directory.is_dir():
            return []
        return sorted(int(path.name) for path in self.directory.iterdir() if path.name.isdigit())
