"""Reading what runs left in the results layout (runs.py: each arm's runs, by seed), statistics over an arm's seeds
(seeds.py), targets along the curves (targets.py) and the paired interval over seeds that every verdict comes from
(paired.py); used by the judging of claims, the figures and the benchmarks alike. No TensorFlow."""
