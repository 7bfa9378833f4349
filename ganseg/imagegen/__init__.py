"""The image generator, mask -> image: the second GAN of ganseg.

networks.py holds the generators (SPADE with noise, pix2pix) and discriminators (multi-scale
PatchGAN, OASIS), losses.py their losses, training.py the state, one step, one epoch and sampling,
quality.py the measures of generated images with a trained segmenter as the judge.
It shares with the segmenter what lives beside both packages: the data (ganseg/data/), checkpoints,
metrics and the contracts between stages. evaluation.py judges a generator on a prepared test split.
"""
