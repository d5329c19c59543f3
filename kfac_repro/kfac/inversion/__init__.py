"""Damped inverses of the Fisher blocks and how they are refreshed.

`damping` splits λ between the factors (paper Eq. 3, 12); `inverses` forms the damped inverses in LAPACK on
`resources`' threads or device; `assignment` gives each inverse to a worker and `divided` computes them divided
among the replicas; `policy` decides when they are refreshed (synchronously every T steps, asynchronously with a
fixed lag or free-running, paper §3.1) and `refresh` carries that out, for both front ends (`kfac.KFAC`, and
`keras.KFAC` through `keras.refresh`).
"""
