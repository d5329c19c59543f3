"""Fisher blocks, one per layer kind, and the Kronecker-factor statistics they are built from.

`base` defines the block life cycle (statistics → EMA factors → damped inverses → preconditioned gradient);
`kronecker` (Dense, Conv2D: F̂ = A ⊗ G), `shared_weight`, `depthwise`, `doubly_factored` (paper §4), `embedding` and
`vector` implement it; `eigenbasis` is `kronecker` in EKFAC's eigenbasis (`eigenvalue_correction`);
`fisher_factors` and `kfc_offsets` compute a mini-batch's factor statistics (paper Eq. 15).
"""
