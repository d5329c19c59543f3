"""The multiply-adds `bench step --model mlp` counts for SGD's and K-FAC's update equal those of the matrix products
TensorFlow runs in their compiled steps (the products that reach the step's outputs or its variable updates:
TensorFlow prunes the rest, such as the weight gradients of the sampled backward pass); the floor divides them by
the product rates."""

import pytest
import tensorflow as tf

from kfac_repro.benchmarks import arithmetic_floor
from kfac_repro.benchmarks.arithmetic_floor import MultiplyAdds, floor, matmul_rate, mlp_multiply_adds
from kfac_repro.benchmarks.step_time import deep_mlp, random_batch
from kfac_repro.kfac import KFAC, SGD, KFACConfig, SGDConfig

WIDTHS, BATCH = (12, 9, 7, 5), 6


def product_multiply_adds(graph: tf.Graph) -> int:
    """Σ m·k·n over the MatMul ops of `graph` that its outputs or control outputs depend on."""
    live: set[str] = set()
    stack = [t.op for t in graph.outputs] + list(graph.control_outputs)
    while stack:
        op = stack.pop()
        if op.name not in live:
            live.add(op.name)
            stack += [t.op for t in op.inputs] + list(op.control_inputs)
    total = 0
    for op in graph.get_operations():
        assert op.type != "BatchMatMulV2", op.name
        if op.type == "MatMul" and op.name in live:
            a, b = (t.shape.as_list() for t in op.inputs)
            rows, inner = (a[1], a[0]) if op.get_attr("transpose_a") else a
            columns = b[0] if op.get_attr("transpose_b") else b[1]
            total += rows * inner * columns
    return total


def test_counts_equal_the_products_of_the_compiled_sgd_and_kfac_steps() -> None:
    x, y = random_batch(BATCH, WIDTHS[:1], WIDTHS[-1])
    counts = mlp_multiply_adds(WIDTHS, BATCH)
    sgd = SGD(deep_mlp(WIDTHS), SGDConfig(learning_rate=0.01))
    assert product_multiply_adds(sgd._step.get_concrete_function(x, y).graph) == counts.sgd
    kfac = KFAC(deep_mlp(WIDTHS), KFACConfig(inverse_every=10**9))
    kfac.train_step(x, y)
    with kfac.taps:
        graph = kfac._steps[True, False].get_concrete_function(x, y, tf.constant(1.0)).graph
    assert product_multiply_adds(graph) == counts.kfac
    kfac.close()
    # by hand: forward 6·(12·9 + 9·7 + 7·5) = 1236; input gradients of the last two layers 6·(63 + 35) = 588
    assert counts == MultiplyAdds(sgd=2 * 1236 + 588, sampled_backward=588,
                                  factor_products=6 * (13**2 + 9**2 + 10**2 + 7**2 + 8**2 + 5**2),
                                  preconditioning=13**2 * 9 + 13 * 9**2 + 10**2 * 7 + 10 * 7**2 + 8**2 * 5 + 8 * 5**2)


def test_the_floor_divides_the_counts_by_the_rates_and_the_sgd_step(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = {tf.float32: 100.0, tf.bfloat16: 200.0}
    monkeypatch.setattr(arithmetic_floor, "matmul_rate", lambda dtype: rates[dtype])
    counts = MultiplyAdds(sgd=1000.0, sampled_backward=200.0, factor_products=1200.0, preconditioning=1600.0)
    bound = floor(counts, sgd_seconds=10.0)
    assert (bound.float32_rate, bound.bfloat16_rate) == (100.0, 200.0)
    assert bound.float32_ratio == pytest.approx(4000.0 / 100.0 / 10.0)
    assert bound.bfloat16_ratio == pytest.approx((1200.0 / 100.0 + 2800.0 / 200.0) / 10.0)


def test_the_product_rate_is_measured() -> None:
    assert matmul_rate(tf.float32, size=64, repeats=2) > 1e6
