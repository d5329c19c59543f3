"""The layer benchmark measures Adam and K-FAC on the same batch in one process and reports ratios to Adam."""

import pytest

from kfac_repro.benchmarks.layer_time import embedding_classifier, measure_layer_models, transformer_block

TINY = {"transformer": lambda: transformer_block(6, 11, 8, 2, 3),
        "embedding": lambda: embedding_classifier(6, 11, 4, 3)}


@pytest.mark.parametrize("name", [pytest.param("transformer", marks=pytest.mark.slow), "embedding"])
def test_layer_benchmark_reports_every_variant_against_adam(name: str) -> None:
    timings = measure_layer_models(TINY[name], 6, 11, 3, 4, repeats=1, warmup=0)
    assert [t.what for t in timings] == ["Adam step", "K-FAC step, statistics every step",
                                         "K-FAC step, statistics every 10th step", "one full inversion (all blocks)"]
    adam = timings[0].seconds
    assert adam > 0 and all(t.seconds > 0 and abs(t.ratio - t.seconds / adam) < 1e-12 for t in timings)
