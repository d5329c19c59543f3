"""The Keras benchmark suite (`kfac-repro bench keras`): K-FAC in `fit` against tuned AdamW, Muon and SGD+Nesterov.

`plan` names the tasks, grids and scales (no TensorFlow); `models` builds each task's model and data and trains one
run; `results` reads and writes the CSVs, selects each grid's setting and computes the paired ratios to targets;
`run` is the resumable driver.
"""
