"""What K-FAC did at each step of `fit`, as a Keras callback: `model.fit(..., callbacks=[KFACDiagnostics()])`.

After each train batch its logs (which later callbacks, the progress bar and TensorBoard see) get, for the update
just taken:
- `kfac_step_size`: η = learning_rate · min(1, √(kl_clip / vᵀg));
- `kfac_kl_bound_set`: 1 if the KL bound set η (√(kl_clip / vᵀg) < 1), 0 if the cap did; `kfac_kl_bound_share`:
  the share of the epoch's updates so far whose η the bound set;
- `kfac_damping`: λ of the inverses (damping + weight_decay);
- `kfac_staleness`: k − s, the steps since the statistics (step s) of the inverses the update k used;
- `kfac_inversion_seconds`: host seconds of the refreshes installed before this step (a background inversion ran
  beside the steps; the first step's own inversion is not counted), `kfac_inversion_wait_seconds`: how long the
  step waited for a background one.
At each epoch's end the epoch's logs (so `History`) get the epoch's mean step size, share, damping and staleness
and its total seconds. Time in statistics and preconditioning is not measured: they are operations of Keras's traced
train step, fused with its forward and backward passes (TensorBoard's `profile_batch` profiles them; `kfac-repro
bench fit` times the whole step against Adam's). With `steps_per_execution` n the values are those of each n-th
step. Given `log_dir`, each step's values are also written as TensorBoard scalars `kfac/<name>` at the step index.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.keras.optimizer import KFAC

SUMMED = ("inversion_seconds", "inversion_wait_seconds")  # an epoch's total; the others: its mean


class KFACDiagnostics(keras.callbacks.Callback):
    """Per-step K-FAC diagnostics in the logs of `fit` (see the module docstring); `optimizer`: the K-FAC optimizer
    (by default the compiled one, found inside a LossScaleOptimizer); `log_dir`: also write TensorBoard scalars."""

    def __init__(self, optimizer: KFAC | None = None, log_dir: str | None = None):
        super().__init__()
        self._optimizer = optimizer
        self.log_dir = log_dir
        self._writer: Any = None
        self._epoch: dict[str, list[float]] = {}
        self._seen_refreshes = 0
        self._waited = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        state = self.optimizer.last_step()
        self._seen_refreshes, self._waited = len(state["refreshes"]), state["waited_seconds"]
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = {}

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        values = self._step_values()
        for name, value in values.items():
            self._epoch.setdefault(name, []).append(value)
        values["kl_bound_share"] = float(np.mean(self._epoch["kl_bound_set"]))
        if logs is not None:
            logs.update({f"kfac_{name}": value for name, value in values.items()})
        if self._writer is not None:
            step = int(self.optimizer.iterations.numpy()) - 1
            with self._writer.as_default():
                for name, value in values.items():
                    tf.summary.scalar(f"kfac/{name}", value, step=step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.flush()
        if logs is None or not self._epoch:
            return
        totals = {name: float(np.sum(values) if name in SUMMED else np.mean(values))
                  for name, values in self._epoch.items()}
        totals["kl_bound_share"] = totals.pop("kl_bound_set")
        logs.update({f"kfac_{name}": value for name, value in totals.items()})

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    @property
    def optimizer(self) -> KFAC:
        """The K-FAC optimizer reported on."""
        if self._optimizer is None:
            compiled = getattr(self.model, "optimizer", None)
            compiled = getattr(compiled, "inner_optimizer", compiled)
            if not isinstance(compiled, KFAC):
                raise ValueError(f"KFACDiagnostics: model {self.model.name!r} is compiled with "
                                 f"{type(compiled).__name__}, not kfac_repro.keras.KFAC: pass the K-FAC optimizer "
                                 "as KFACDiagnostics(optimizer=...)")
            self._optimizer = compiled
        return self._optimizer

    def _step_values(self) -> dict[str, float]:
        """This step's values, the refreshes installed since the last call included."""
        state = self.optimizer.last_step()
        step = int(self.optimizer.iterations.numpy()) - 1
        new = state["refreshes"][self._seen_refreshes:]
        self._seen_refreshes = len(state["refreshes"])
        waited, self._waited = state["waited_seconds"] - self._waited, state["waited_seconds"]
        return {"step_size": state["step_size"], "kl_bound_set": state["kl_bound_set"], "damping": state["damping"],
                "staleness": float(step - state["inverse_source"]),
                "inversion_seconds": float(sum(refresh.seconds for refresh in new)), "inversion_wait_seconds": waited}
