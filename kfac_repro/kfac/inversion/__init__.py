"""The inversion engine: which worker computes which damped inverse, where and when they are installed.

`assignment` gives each inverse to a worker; `resources` spreads a refresh over the host's cores; `divided` computes
the inverses (the blocks' recipes, `kfac.linalg`) divided among the replicas; `refresh` installs them synchronously
every T steps or asynchronously (paper §3.1).
"""
