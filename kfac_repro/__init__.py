"""kfac-repro: distributed K-FAC for TensorFlow 2 / Keras 3 and a reproduction suite for Ba, Grosse & Martens (2017)."""
