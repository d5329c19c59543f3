"""Reading what runs left in the results layout (runs.py: each arm's runs, by seed) and statistics over an arm's
seeds (seeds.py); used by the judging of claims and by the figures alike. No TensorFlow."""
