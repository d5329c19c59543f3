"""Data-parallel training on tf.distribute: cluster configuration, strategies, local worker launching, and the stop
signals passed between a parent process and its children (`interrupts`)."""
