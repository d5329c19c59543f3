"""The linear algebra of the damped inverses, apart from any block or engine.

`damping` splits λ between a block's factors (paper Eq. 3, 12); `inverses` forms a damped factor's inverse or
Cholesky factor (and says what that costs), with `lapack` (without the GIL) on the host or tf.linalg on the device
`device` names for the calling thread. The blocks build their inverse recipes from these; the inversion engine
(`kfac.inversion`) decides where and when they run.
"""
