"""Data-parallel training on tf.distribute: cluster configuration, strategies, local worker launching."""
