"""SGD with momentum (the paper's baseline), behind the same `train_step` interface as K-FAC."""

from __future__ import annotations

import keras
import tensorflow as tf

from kfac_repro.kfac.base import Metrics, ModelOptimizer, scheduled
from kfac_repro.kfac.config import SGDConfig
from kfac_repro.kfac.replicas import all_reduce_mean


class SGD(ModelOptimizer):
    """θ ← θ − v, v ← μ v + η_k (∇L + wd θ); η_k decays as SGDConfig.lr_schedule()."""

    def __init__(self, model: keras.Model, config: SGDConfig | None = None):
        self.config = config or SGDConfig()
        super().__init__(model, self.config)
        self._step = self.distributed(self._replica_step)

    def _replica_step(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            loss, outputs = self.loss_and_outputs(x, y, training=True)
        grads = self.global_gradients(tape, loss)
        learning_rate = scheduled(self.config.lr_schedule(), self.iterations)
        self.commit(self.update_assignments(grads, learning_rate))
        loss, error = all_reduce_mean([loss, self.error_rate(outputs, y)])
        return {"loss": loss, "error": error, "step_size": learning_rate, "learning_rate": learning_rate}

    def restored(self) -> None:
        """SGD keeps no host-side state: everything is in its variables."""

    def step(self, x: tf.Tensor, y: tf.Tensor) -> Metrics:
        self.check_trainable()
        return self._step(x, y)
