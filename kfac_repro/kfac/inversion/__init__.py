"""The inversion engine: which worker computes which damped inverse, where and when they are installed.

`assignment` gives each inverse to a worker; `resources` spreads a refresh over the host's cores; `divided` computes
the inverses (the blocks' recipes, `kfac.linalg`) divided among the replicas; `policy` decides when they are
refreshed (synchronously every T steps, asynchronously with a fixed lag or free-running, paper §3.1) and `refresh`
carries that out, for both front ends (`kfac.KFAC`, and `keras.KFAC` through `keras.refresh`).
"""
