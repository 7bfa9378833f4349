"""Measurements that `ganseg bench` prints as tables: throughput.py times the training step,
quality.py trains and scores the GAN against the supervised baseline, tables.py formats both."""
