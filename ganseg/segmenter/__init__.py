"""The GAN segmenter, image -> mask: its networks, losses, training step and inference.

networks.py holds the U-Net generator and the PatchGAN discriminator, losses.py the supervised
and adversarial losses, training.py the training state, step and epoch, inference.py the
predictions for images of any size. Data, checkpoints, export, metrics and benches are shared
with the image generator and live beside this package.
"""
