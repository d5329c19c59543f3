"""Each inverse of a block computed on its own (the unit the workers divide) equals, bit for bit, the same inverse
computed with all of its block's others, for every kind of block; a refresh that spreads the parts over threads
installs the same bits."""

import keras
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from kfac_repro.kfac import KFAC, KFACConfig
from tests.model_kinds import cnn, separable_net, text_cnn, transformer


def fc_over_map() -> keras.Model:
    inputs = keras.Input((3, 3, 4))
    return keras.Model(inputs, keras.layers.Dense(5, name="fc6")(keras.layers.Flatten()(inputs)))


def random_factors(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A PSD matrix (stacked over leading axes) or, for a 1-D factor, a positive diagonal."""
    if len(shape) == 1:
        return rng.random(shape[0]).astype(np.float32)
    root = rng.normal(size=(*shape[:-1], 2 * shape[-1]))
    return (root @ np.swapaxes(root, -1, -2) / (2 * shape[-1])).astype(np.float32)


@pytest.mark.parametrize(("build", "doubly"), [(cnn, ()), (separable_net, ()), (text_cnn, ()), (transformer, ()),
                                               (fc_over_map, ("fc6",))],
                         ids=["conv-bn-dense", "depthwise-separable", "embedding-conv1d", "transformer", "doubly"])
def test_inverses_computed_part_by_part_equal_those_computed_together(build, doubly) -> None:  # type: ignore[no-untyped-def]
    keras.utils.set_random_seed(0)
    optimizer = KFAC(build(), KFACConfig(doubly_factored=doubly, damping=0.01))
    rng = np.random.default_rng(0)
    kinds = set()
    for block in optimizer.blocks:
        factors = {name: random_factors(shape, rng) for name, shape in block.factor_shapes.items()}
        together = block.compute_inverse(factors, 0.01, "float32")
        assert set(together) == set(block.inverse), block.kind
        for part in block.inverse:
            alone = block.compute_inverse(factors, 0.01, "float32", parts=(part,))
            assert list(alone) == [part]
            np.testing.assert_array_equal(alone[part], together[part], err_msg=f"{block.kind} {part}")
        kinds.add(block.kind)
    optimizer.close()
    assert len(kinds) >= 2 or doubly, kinds


def test_a_refresh_spreading_its_parts_over_threads_installs_what_each_block_computes_alone() -> None:
    keras.utils.set_random_seed(0)
    optimizer = KFAC(cnn(), KFACConfig(damping=0.01, inversion_threads=2))
    rng = np.random.default_rng(1)
    expected = {}
    with threadpool_limits(limits=1, user_api="blas"):  # the BLAS threads a part of this size gets in the refresh
        for block in optimizer.blocks:
            factors = {name: random_factors(shape, rng) for name, shape in block.factor_shapes.items()}
            for name, value in factors.items():
                block.factors[name].assign(value)
            expected[block.name] = block.compute_inverse(factors, optimizer.inversion.damping, "float32")
    assert len(optimizer.inversion.parts) > 2
    optimizer.refresh_inverses()
    for block in optimizer.blocks:
        for part, value in expected[block.name].items():
            np.testing.assert_array_equal(block.inverse[part].numpy(), value, err_msg=f"{block.name} {part}")
    optimizer.close()
