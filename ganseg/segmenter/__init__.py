"""The GAN segmenter, image -> mask: its networks, losses, training step, inference, evaluation and
exported folder.

networks.py holds the segmenter's discriminator (the U-Net and PatchGAN blocks are in ganseg/gan/),
losses.py the supervised and adversarial losses, training.py the training state, step and epoch,
inference.py the predictions for images of any size, evaluation.py the full-size test scores,
export.py the model folder. Its training job (ganseg/jobs/) and the generated pairs it can learn
from (ganseg/synthetic_pairs.py) live above this package; it never imports the image generator's.
"""
