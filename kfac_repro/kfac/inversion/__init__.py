"""Damped inverses of the Fisher blocks and how they are refreshed.

`damping` splits λ between the factors (paper Eq. 3, 12); `inverses` forms the damped inverses in LAPACK on
`resources`' threads or device; `assignment` gives each inverse to a worker and `divided` computes them divided
among the replicas; `refresh` installs them synchronously every T steps or asynchronously (paper §3.1).
"""
