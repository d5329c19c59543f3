"""K-FAC on the paper's models: every Conv2D and Dense layer gets a Kronecker (or doubly-factored) block, every BN
layer a scale-shift block, and a K-FAC and an SGD step run on every reduced-scale model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfac_repro.kfac import KFAC, SGD, KFACConfig, SGDConfig
from kfac_repro.models.registry import MODEL_NAMES, build_model

REDUCED = {"input_shape": (32, 32, 3), "num_classes": 10, "width_multiplier": 0.25}


def layers_of(model: keras.Model, kind: type) -> set[str]:
    return {layer.name for layer in model._flatten_layers(include_self=False) if isinstance(layer, kind)}


HEAVY_BN = {"googlenet", "resnet50", "resnet101"}  # ~60-120 s each here, mostly tracing ~100 BN blocks
CASES = [pytest.param(name, False, id=f"plain-{name}", marks=[pytest.mark.slow] if name == "resnet101" else [])
         for name in MODEL_NAMES] + [
    pytest.param(name, True, id=f"bn-{name}", marks=[pytest.mark.slow] if name in HEAVY_BN else [])
    for name in MODEL_NAMES
]


@pytest.mark.parametrize(("name", "batch_norm"), CASES)
def test_every_conv_and_dense_layer_is_registered_and_both_methods_step(name: str, batch_norm: bool) -> None:
    keras.utils.set_random_seed(0)
    model = build_model(name, batch_norm=batch_norm, bn_chunk_size=4 if batch_norm else None, **REDUCED)
    doubly = ("fc6",) if name == "alexnet" else ()
    optimizer = KFAC(model, KFACConfig(damping=0.1, doubly_factored=doubly))
    kinds = {block.name: block.kind for block in optimizer.blocks}
    weighted = layers_of(model, keras.layers.Conv2D) | layers_of(model, keras.layers.Dense)
    assert weighted and weighted <= set(kinds)
    for layer in weighted:
        assert kinds[layer].startswith("kronecker") or (layer in doubly and kinds[layer] == "doubly-factored")
    for layer in layers_of(model, keras.layers.BatchNormalization):
        assert kinds[layer].startswith("scale-shift")
    assert len(layers_of(model, keras.layers.BatchNormalization)) > 0 if batch_norm else True

    x = tf.random.normal((8, *REDUCED["input_shape"]), seed=1)
    y = tf.constant(np.arange(8) % 10, tf.int32)
    metrics = optimizer.train_step(x, y)
    assert np.isfinite(metrics["loss"]) and metrics["step_size"] > 0
    optimizer.close()
    sgd_metrics = SGD(build_model(name, batch_norm=batch_norm, **REDUCED), SGDConfig(learning_rate=0.01)).train_step(
        x, y)
    assert np.isfinite(sgd_metrics["loss"])
