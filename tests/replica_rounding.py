"""Train Fig. 2's cpu-profile K-FAC arm (sync-gpu1's settings) for a few updates with N in-process replicas, the
initial weights optionally scaled by (1 + perturb), and save the per-update training losses:
`python tests/replica_rounding.py N PERTURB STEPS OUT.npy`. Its own process: logical CPU devices are set before
TensorFlow starts."""

import sys

import numpy as np


def main(replicas: int, perturb: float, steps: int, out: str) -> None:
    from kfac_repro.distribute.strategy import make_strategy

    strategy = make_strategy(replicas)
    import keras
    import tensorflow as tf

    from kfac_repro.data.registry import make_dataset
    from kfac_repro.kfac import optimizer_for
    from kfac_repro.models.registry import build_model
    from kfac_repro.runner.experiment import optimizer_config
    from kfac_repro.specs import load_spec

    tf.config.experimental.enable_op_determinism()
    arm = load_spec("cifar10-async", "cpu", arms=("sync-gpu1",)).arms["sync-gpu1"]
    seed, batch, size = int(arm.training["seed"]), int(arm.training["batch_size"]), int(arm.model["input_size"])
    keras.utils.set_random_seed(seed)

    def pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset("fashion_mnist", "train", batch, input_context=context, seed=seed, image_size=size,
                            holdout=int(arm.data["holdout"]))

    batches = iter(strategy.distribute_datasets_from_function(pipeline))
    knobs = {k: v for k, v in arm.model.items() if k not in ("name", "input_size", "num_classes")}
    with strategy.scope():
        model = build_model(arm.model["name"], input_shape=(size, size, 1), num_classes=10, **knobs)
        for variable in model.trainable_variables:
            variable.assign(variable * (1.0 + perturb))
        trainer = optimizer_for(model, optimizer_config(arm.optimizer, seed)[1])
    losses = [float(trainer.train_step(*next(batches))["loss"]) for _ in range(steps)]
    np.save(out, np.array(losses))


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
