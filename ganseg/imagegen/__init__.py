"""The image generator, mask -> image: the second GAN of ganseg.

networks.py holds the generators (SPADE with noise, pix2pix) and discriminators (multi-scale
PatchGAN, OASIS), losses.py their losses, training.py the state, one step, one epoch and sampling,
quality.py the measures of generated images with a trained segmenter as the judge.
evaluation.py judges a generator on a prepared test split, export.py is its model folder. It
shares with the segmenter what lives below both packages: the networks' building blocks and the
moving average (ganseg/gan/), the data (ganseg/data/), checkpoints, metrics and the contracts
between stages; its training job (ganseg/jobs/) lives above both. It imports nothing of ganseg/segmenter/.
"""
