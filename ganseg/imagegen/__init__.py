"""The image generator, mask -> image: the second GAN of ganseg (not written yet).

Its networks, losses and training step will live here, as the segmenter's live in
ganseg/segmenter/. It will share with the segmenter what lives beside both packages: the data
(ganseg/data/), checkpoints, export, metrics, the contracts between stages and the benches.
"""
