"""Batch normalisation over chunks of the mini-batch: the paper's "rbz" baseline (§6.2.1).

Large-batch SGD+BN normally computes BN statistics per chunk of 32 examples (one GPU's share); the paper's
"enhanced BN" uses larger chunks (rbz = 64, 128 or 256). `ChunkedBatchNormalization(chunk_size=rbz)` does this on
one device: in training the batch [B, ..., C] is cut into chunks of `chunk_size` consecutive examples (the last
chunk is smaller when B is not a multiple of `chunk_size`), and every example is normalised with the mean and
(biased) variance of its own chunk, over the chunk's examples and all non-channel axes. The moving statistics are
updated with the size-weighted mean of the chunk statistics (the plain mean when all chunks are full). Inference
uses the moving statistics. `chunk_size=None` is ordinary whole-batch BN.

The output is computed literally as gamma * x_hat + beta with x_hat = (x - mean) / sqrt(variance + epsilon), so
that K-FAC can recover x_hat = (y - beta) / gamma from the output. Batch renormalisation, synchronised BN and
masks are not supported.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kfac_repro")
class ChunkedBatchNormalization(keras.layers.BatchNormalization):
    """keras BatchNormalization whose training statistics are computed per chunk of `chunk_size` examples."""

    def __init__(self, chunk_size: int | None = None, **kwargs: Any):
        if kwargs.get("renorm") or kwargs.get("synchronized"):
            raise ValueError("ChunkedBatchNormalization supports neither renorm nor synchronized")
        if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) != chunk_size
                                       or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        super().__init__(**kwargs)
        self.chunk_size = None if chunk_size is None else int(chunk_size)

    def call(self, inputs: tf.Tensor, training: bool | None = None, mask: tf.Tensor | None = None) -> tf.Tensor:
        if mask is not None:
            raise ValueError(f"layer {self.name!r}: ChunkedBatchNormalization does not support masks")
        x = tf.cast(inputs, tf.float32) if inputs.dtype != tf.float64 else inputs
        rank = len(x.shape)
        channel_axis = self.axis % rank
        broadcast_shape = [1] * rank
        broadcast_shape[channel_axis] = -1
        if training and self.trainable:
            mean, variance = self._chunk_moments(x, channel_axis)
            self._update_moving_statistics(mean, variance, x)
        else:
            mean = tf.reshape(tf.cast(self.moving_mean, x.dtype), broadcast_shape)
            variance = tf.reshape(tf.cast(self.moving_variance, x.dtype), broadcast_shape)
        x_hat = (x - mean) * tf.math.rsqrt(variance + self.epsilon)
        outputs = x_hat
        if self.scale:
            outputs = outputs * tf.reshape(tf.cast(self.gamma, x.dtype), broadcast_shape)
        if self.center:
            outputs = outputs + tf.reshape(tf.cast(self.beta, x.dtype), broadcast_shape)
        return tf.cast(outputs, self.compute_dtype)

    def _chunk_moments(self, x: tf.Tensor, channel_axis: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-example mean and variance of each example's chunk, both shaped to broadcast against x."""
        rank = len(x.shape)
        batch = tf.shape(x)[0]
        chunk = batch if self.chunk_size is None else tf.minimum(batch, self.chunk_size)
        chunk_ids = tf.range(batch) // chunk
        num_chunks = (batch + chunk - 1) // chunk
        per_example_axes = [axis for axis in range(1, rank) if axis != channel_axis]
        example_shape: list = [batch] + [1] * (rank - 1)
        example_shape[channel_axis] = x.shape[channel_axis]
        counts = tf.math.unsorted_segment_sum(tf.ones([batch], x.dtype), chunk_ids, num_chunks)

        def chunk_mean(values: tf.Tensor) -> tf.Tensor:  # values [B, ..., C] → per-example chunk means [B, C]
            per_example = tf.reduce_mean(values, axis=per_example_axes)
            sums = tf.math.unsorted_segment_sum(per_example, chunk_ids, num_chunks)
            return tf.gather(sums / counts[:, None], chunk_ids)

        mean = tf.reshape(chunk_mean(x), example_shape)
        variance = tf.reshape(chunk_mean(tf.square(x - mean)), example_shape)
        return mean, variance

    def _update_moving_statistics(self, mean: tf.Tensor, variance: tf.Tensor, x: tf.Tensor) -> None:
        """Moving averages of the size-weighted mean of the chunk statistics (per-example rows averaged)."""
        flat_mean = tf.reshape(mean, [tf.shape(x)[0], -1])
        flat_variance = tf.reshape(variance, [tf.shape(x)[0], -1])
        batch_mean = tf.cast(tf.reduce_mean(flat_mean, axis=0), self.moving_mean.dtype)
        batch_variance = tf.cast(tf.reduce_mean(flat_variance, axis=0), self.moving_variance.dtype)
        self.moving_mean.assign(self.moving_mean * self.momentum + batch_mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + batch_variance * (1.0 - self.momentum)
        )

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config["chunk_size"] = self.chunk_size
        return config
