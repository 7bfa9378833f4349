"""The data both models share: a user's folder or the built-in synthetic tissue, prepared once into
tiles and whole test images, then read for training and evaluation.

sources.py reads a dataset folder, prepare.py writes the prepared folder, datasets.py reads it
back; intensity, splits, void, augment and synthetic are the rules they apply.
"""
