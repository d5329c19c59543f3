"""The paper's amortisation in `fit` (issue 34): statistics every `stats_every` steps on the first `stats_batch_size`
examples, inverses every `inverse_every` steps, synchronously or asynchronously at a pinned lag; each taken at
exactly the configured steps (recorded after every batch and compared with the step lists the settings give)."""

import itertools
from typing import Any

import keras
import numpy as np
import pytest

from kfac_repro.keras import KFAC
from tests.numpy_reference import with_ones
from tests.test_keras_learning_rate import BATCH, D_IN, SCCE_LOGITS, mlp

STEPS = 12


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(STEPS * BATCH, D_IN)).astype("float32")
    return x, rng.integers(0, 3, STEPS * BATCH).astype("int32")


def fit_recording(x: np.ndarray, y: np.ndarray, settings: dict[str, Any]) -> tuple[KFAC, list[dict]]:
    """After each step: the statistics count, the step of the installed inverses' statistics, the first layer's A."""
    model = mlp()
    optimizer = KFAC(model, **settings)
    model.compile(optimizer=optimizer, loss=SCCE_LOGITS)
    first = optimizer.preconditioner.blocks[0]
    records: list[dict] = []

    def record(batch: int, logs: object = None) -> None:
        records.append({"stats_updates": int(optimizer.preconditioner.stats_updates.numpy()),
                        "inverse_source": int(optimizer._binding.refresh.inverse_source.numpy()),
                        "A": first.factors["A"].numpy().astype(np.float64)})

    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=record)])
    optimizer.close()
    return optimizer, records


@pytest.mark.parametrize("settings", [
    {"inversion": "sync", "inverse_every": 4, "stats_every": 3, "stats_batch_size": 16},
    {"inversion": "async", "inverse_every": 3, "stats_every": 2, "stats_batch_size": 8},  # async_lag: 3 (the default)
], ids=["sync", "async"])
def test_statistics_and_inverses_are_taken_exactly_at_the_configured_steps(data: tuple,
                                                                           settings: dict[str, Any]) -> None:
    x, y = data
    optimizer, records = fit_recording(x, y, settings)
    every, sub, period = settings["stats_every"], settings["stats_batch_size"], settings["inverse_every"]

    counts = [0] + [r["stats_updates"] for r in records]
    folds = [after - before for before, after in itertools.pairwise(counts)]
    # step 0 folds twice: the whole batch for the first inverses (as the host loop), then its scheduled statistics
    assert folds == [2] + [int(k % every == 0) for k in range(1, STEPS)]

    installed = [(r.snapshot_step, r.installed_at) for r in optimizer._binding.refresh.engine.history]
    if settings["inversion"] == "sync":  # the current factors, inverted and installed before every T-th step
        assert installed == [(k, k) for k in range(period, STEPS, period)]
        assert [r["inverse_source"] for r in records] == [k - k % period for k in range(STEPS)]
    else:  # the snapshot of step s installed before step s + lag, the next snapshot taken there
        assert installed == [(k - period, k) for k in range(period, STEPS, period)]
        assert [r["inverse_source"] for r in records] == [max(k - k % period - period, 0) for k in range(STEPS)]

    def moment(rows: np.ndarray) -> np.ndarray:
        ones = with_ones(rows.astype(np.float64))
        return ones.T @ ones / len(rows)

    # the statistics are those of the first `stats_batch_size` examples of the step's batch (the first fold: all)
    np.testing.assert_allclose(records[0]["A"], 0.5 * moment(x[:BATCH]) + 0.5 * moment(x[:sub]), rtol=1e-4,
                               atol=1e-6)
    for k in range(every, STEPS, every):
        count = counts[k + 1]
        decay = min(1 - 1 / count, optimizer.config.stats_decay)
        batch = (records[k]["A"] - decay * records[k - 1]["A"]) / (1 - decay)
        np.testing.assert_allclose(batch, moment(x[k * BATCH: k * BATCH + sub]), rtol=1e-3, atol=1e-5,
                                   err_msg=f"step {k}")
