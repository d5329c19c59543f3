"""What an arm of a paper experiment costs per update (`kfac-repro bench arms`), and where that was measured.

`measure` times every arm and its components in one process; `table` is bench-arms.csv (a sitting's rows, its CPU
and commit); `cluster_clock` models the paper's cluster layout from the components; `cpu_identity` and `other_cpu`
record which CPU ran a sitting and how much of it other processes took.
"""
