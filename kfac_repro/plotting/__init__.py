"""Figures 2–8 of the paper and the reproduction report, from the CSVs under results/ (no TensorFlow)."""
