"""The Keras benchmark suite's models, data and optimizers (plan.py: their names, grids and scales), one
training run, and the per-step cost in turns.

A run trains one task with one optimizer setting from one seed for the same budget of steps as every other run of
that task and batch size, through Keras's own `model.fit`, and logs, at step 0 and after each step of
`plan.evaluation_steps` (dense early, even later), two lower-is-better metrics in inference mode: the *selection*
metric on a held-out split of the training data (used only to pick each optimizer's setting, so only the tuning runs
log it) and the *target* metric
(classifiers: error on the test split; the autoencoder: reconstruction loss on training examples, the classic
benchmark's training loss). Before each evaluation of a model with batch normalisation, its population statistics
are recomputed from the same PRECISE_BN_BATCHES × PRECISE_BN_SIZE training examples of the run
(models/batch_norm_statistics.py): Keras's moving averages lag hundreds of steps behind, and at the suite's budgets
every optimizer's inference-mode error sat at chance for the first third to half of a run.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from kfac_repro.benchmarks.keras_suite.plan import ERROR_METRIC, KFAC_ARMS, OPTIMIZERS, Scale, budget, evaluation_steps
from kfac_repro.benchmarks.step_time import whole_periods
from kfac_repro.keras import KFAC
from kfac_repro.models.batch_norm_statistics import recompute_batch_norm_statistics

Arrays = tuple[np.ndarray, np.ndarray]
PRECISE_BN_BATCHES, PRECISE_BN_SIZE = 5, 200


@dataclass(frozen=True)
class Task:
    """A model builder (given the width multiplier; the README's MLP is always full size), its data (given the
    seed and scale: train, held-out and target splits) and its compiled loss."""

    build: Callable[[float], keras.Model]
    data: Callable[[int, Scale], tuple[Arrays, Arrays, Arrays]]
    loss: Callable[[], keras.losses.Loss]


def _units(count: int, width: float) -> int:
    return max(2, round(count * width))


def readme_mlp() -> keras.Model:
    """The README's MLP: 784 → 128 (ReLU) → 10 logits."""
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])


def bn_cnn(width: float = 1.0) -> keras.Model:
    """Two stages of two 3×3 conv → BatchNormalization → ReLU (32, 64 channels), 2×2 max-pooling after each,
    global average pooling → 10 logits."""
    layers: list[keras.layers.Layer] = [keras.Input((28, 28, 1))]
    for channels in (32, 64):
        for _ in range(2):
            layers += [keras.layers.Conv2D(_units(channels, width), 3, padding="same", use_bias=False),
                       keras.layers.BatchNormalization(), keras.layers.ReLU()]
        layers.append(keras.layers.MaxPooling2D())
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)]
    return keras.Sequential(layers)


def residual_cnn(width: float) -> keras.Model:
    """A 3×3 conv stem (16 channels), then three residual blocks x + BN(conv(ReLU(BN(conv x)))) followed by ReLU,
    the second and third with stride 2 and twice the channels (a 1×1 conv on the shortcut), global average
    pooling → 10 logits."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(
        keras.layers.Conv2D(_units(16, width), 3, padding="same", use_bias=False)(inputs)))
    for channels, stride in ((16, 1), (32, 2), (64, 2)):
        filters = _units(channels, width)
        y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(
            keras.layers.ReLU()(keras.layers.BatchNormalization()(y)))
        y = keras.layers.BatchNormalization()(y)
        shortcut = x if stride == 1 else keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
        x = keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


AUTOENCODER_WIDTHS = (1000, 500, 250, 30)


def autoencoder(width: float) -> keras.Model:
    """Hinton & Salakhutdinov's deep autoencoder: 784-1000-500-250-30 (linear code) and back, tanh hidden layers,
    784 logits of the pixels (binary cross-entropy against the grey levels in [0, 1])."""
    hidden = [_units(units, width) for units in AUTOENCODER_WIDTHS]
    layers: list[keras.layers.Layer] = [keras.Input((784,))]
    layers += [keras.layers.Dense(units, activation="tanh") for units in hidden[:-1]]
    layers.append(keras.layers.Dense(hidden[-1]))
    layers += [keras.layers.Dense(units, activation="tanh") for units in reversed(hidden[:-1])]
    layers.append(keras.layers.Dense(784))
    return keras.Sequential(layers)


SEQUENCE_LENGTH, VOCABULARY, KEYS = 32, 64, ((1, 2), (3, 4))


def sequence_model(width: float) -> keras.Model:
    """Embedding (64 tokens → 32) → Conv1D (64 filters of 3, ReLU) → global max-pooling → 4 logits."""
    return keras.Sequential([keras.Input((SEQUENCE_LENGTH,), dtype="int32"),
                             keras.layers.Embedding(VOCABULARY, _units(32, width)),
                             keras.layers.Conv1D(_units(64, width), 3, activation="relu"),
                             keras.layers.GlobalMaxPooling1D(), keras.layers.Dense(2 ** len(KEYS))])


def key_sequences(seed: int, count: int) -> Arrays:
    """`count` sequences of uniform tokens 1..63, in each of which each key bigram of KEYS is planted at a random
    place with probability 1/2; the label is the binary number whose bit k says whether key k occurs (planted or
    by chance). Deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCABULARY, (count, SEQUENCE_LENGTH))
    for key in KEYS:
        planted = rng.random(count) < 0.5
        where = rng.integers(0, SEQUENCE_LENGTH - 1, count)
        rows = np.flatnonzero(planted)
        tokens[rows, where[rows]], tokens[rows, where[rows] + 1] = key
    labels = np.zeros(count, dtype="int32")
    for bit, (first, second) in enumerate(KEYS):
        present = ((tokens[:, :-1] == first) & (tokens[:, 1:] == second)).any(axis=1)
        labels |= present.astype("int32") << (len(KEYS) - 1 - bit)
    return tokens.astype("int32"), labels


@functools.cache
def _fashion_scaled() -> tuple[Arrays, Arrays]:
    """Fashion-MNIST with grey levels in [0, 1] (float32), read once per process."""
    from kfac_repro.data.fashion_mnist import load_fashion_mnist

    (x, y), (x_test, y_test) = load_fashion_mnist()
    return ((x / np.float32(255.0)).astype("float32"), y), ((x_test / np.float32(255.0)).astype("float32"), y_test)


def _fashion(seed: int, scale: Scale, flat: bool) -> tuple[Arrays, Arrays, Arrays]:
    """Training examples, the last `evaluation` training examples held out, the first `evaluation` test examples
    (the autoencoder's targets are its inputs, and its target split is training examples)."""
    del seed  # the split is fixed; the seed orders the examples
    (x, y), (x_test, y_test) = _fashion_scaled()
    shape = (-1, 784) if flat else (-1, 28, 28, 1)
    x, x_test = x.reshape(shape), x_test.reshape(shape)
    held = scale.evaluation
    end = len(x) - held if scale.train is None else min(scale.train, len(x) - held)
    train, val = (x[:end], y[:end].astype("int32")), (x[-held:], y[-held:].astype("int32"))
    if flat:
        return (train[0], train[0]), (val[0], val[0]), (train[0][:held], train[0][:held])
    return train, val, (x_test[:held], y_test[:held].astype("int32"))


def _sequences(seed: int, scale: Scale) -> tuple[Arrays, Arrays, Arrays]:
    train = 20_000 if scale.train is None else scale.train
    x, y = key_sequences(seed, train + 2 * scale.evaluation)
    cut = (train, train + scale.evaluation)
    return (x[:cut[0]], y[:cut[0]]), (x[cut[0]:cut[1]], y[cut[0]:cut[1]]), (x[cut[1]:], y[cut[1]:])


def _classes() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _pixels() -> keras.losses.Loss:
    return keras.losses.BinaryCrossentropy(from_logits=True)


def _images(seed: int, scale: Scale) -> tuple[Arrays, Arrays, Arrays]:
    return _fashion(seed, scale, flat=False)


def _flat(seed: int, scale: Scale) -> tuple[Arrays, Arrays, Arrays]:
    return _fashion(seed, scale, flat=True)


TASKS: dict[str, Task] = {
    "mlp": Task(lambda _: readme_mlp(), _images, _classes),
    "bn-cnn": Task(bn_cnn, _images, _classes),
    "resnet": Task(residual_cnn, _images, _classes),
    "autoencoder": Task(autoencoder, _flat, _pixels),
    "sequence": Task(sequence_model, _sequences, _classes),
}


def make_optimizer(name: str, setting: dict[str, float], model: keras.Model) -> keras.optimizers.Optimizer:
    """The optimizer `name` of plan.GRIDS with `setting`."""
    if name in KFAC_ARMS:
        settings: dict[str, Any] = {**KFAC_ARMS[name], **setting}
        return KFAC(model, **settings)
    if name == "adamw":
        return keras.optimizers.AdamW(**setting)
    if name == "muon":
        return keras.optimizers.Muon(**setting)
    if name == "sgd":
        return keras.optimizers.SGD(momentum=0.9, nesterov=True, **setting)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


@dataclass(frozen=True)
class Curve:
    """The run's evaluation steps and, at each, the selection (tuning runs; else empty) and the target metric (NaN
    once diverged), its budget of steps, and its own training seconds (informative only: the suite's wall-clock
    comes from the cost timing)."""

    steps: list[int]
    selection: list[float]
    target: list[float]
    budget: int
    seconds: float


def _compiled(name: str, optimizer: str, setting: dict[str, float], seed: int, width: float) -> keras.Model:
    keras.utils.set_random_seed(seed)
    task = TASKS[name]
    model = task.build(width)
    model.compile(optimizer=make_optimizer(optimizer, setting, model), loss=task.loss(),
                  metrics=["accuracy"] if ERROR_METRIC[name] else [])
    return model


def _metric(name: str, model: keras.Model, data: Arrays, chunk: int = 1000) -> float:
    """The task's metric on `data` in inference mode, called eagerly in chunks (no evaluation graph to trace): the
    error where ERROR_METRIC says so, else the loss; NaN where the loss is not finite."""
    loss, wrong = 0.0, 0
    function = TASKS[name].loss()
    for start in range(0, len(data[0]), chunk):
        x, y = data[0][start:start + chunk], data[1][start:start + chunk]
        output = keras.ops.convert_to_numpy(model(x, training=False))
        loss += float(function(y, output)) * len(x)
        if ERROR_METRIC[name]:
            wrong += int(np.sum(np.argmax(output, axis=-1) != y))
    count = len(data[0])
    if not math.isfinite(loss):
        return math.nan
    return wrong / count if ERROR_METRIC[name] else loss / count


def train_run(task_name: str, optimizer: str, setting: dict[str, float], seed: int, batch: int,
              scale: Scale, selecting: bool = True) -> Curve:
    """One run: seed `seed` sets the initialisation and the example order (the same for every optimizer);
    `selecting=False` (a measured run, whose setting is chosen already) leaves the selection curve empty."""
    train, val, target = TASKS[task_name].data(seed, scale)
    steps = budget(len(train[0]), batch, scale)
    per_epoch = len(train[0]) // batch
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(train[0]))[:per_epoch * batch] for _ in range(scale.epochs)])
    model = _compiled(task_name, optimizer, setting, seed, scale.width_of(task_name))
    calibration = [train[0][order[k * PRECISE_BN_SIZE:(k + 1) * PRECISE_BN_SIZE]] for k in range(PRECISE_BN_BATCHES)
                   if k * PRECISE_BN_SIZE < len(order)]

    def evaluate() -> None:
        recompute_batch_norm_statistics(model, calibration)
        if selecting:
            curve.selection.append(_metric(task_name, model, val))
        curve.target.append(_metric(task_name, model, target))

    curve = Curve([0], [], [], steps, 0.0)
    evaluate()
    seconds, done = 0.0, 0
    for until in evaluation_steps(steps, scale.evals):
        if math.isnan(curve.target[-1]):
            break
        chunk = order[done * batch:until * batch]
        start = time.perf_counter()
        model.fit(train[0][chunk], train[1][chunk], batch_size=batch, epochs=1, shuffle=False, verbose=0)
        seconds += time.perf_counter() - start
        done = until
        curve.steps.append(done)
        evaluate()
    _close(model)
    return Curve(curve.steps, curve.selection, curve.target, steps, seconds)


def _close(model: keras.Model) -> None:
    """Remove K-FAC's taps and free Keras's global state, so that hundreds of runs in one process do not pile up
    graphs (the next run starts from set_random_seed and fresh layer names)."""
    if isinstance(model.optimizer, KFAC):
        model.optimizer.close()
    keras.backend.clear_session()


def time_steps(task_name: str, settings: dict[str, dict[str, float]], batch: int, scale: Scale,
               progress: Callable[[str], None] = lambda _: None) -> tuple[dict[str, float], int]:
    """Seconds per `fit` step of each optimizer with its setting, measured in this one process, and the steps per
    round: after a warm-up turn each (tracing, the first inversion), `scale.cost_rounds` rounds in which every
    optimizer in turn fits the same examples for at least `scale.cost_steps` steps, whole refresh periods of every
    K-FAC optimizer (so each round holds its refreshes as often as training does); the median over rounds."""
    models = {name: _compiled(task_name, name, setting, 0, scale.width_of(task_name))
              for name, setting in settings.items()}
    steps = whole_periods(scale.cost_steps, (model.optimizer.refresh_period for model in models.values()
                                             if isinstance(model.optimizer, KFAC)))
    (x, y), _, _ = TASKS[task_name].data(0, scale)
    index = np.arange(batch * steps) % len(x)
    x, y = x[index], y[index]
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(scale.cost_rounds + 1):
        progress(f"round {round_}/{scale.cost_rounds}" if round_ else "warm-up")
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
            if round_:
                times[name].append((time.perf_counter() - start) / steps)
    for model in models.values():
        _close(model)
    return {name: float(np.median(values)) for name, values in times.items()}, steps
