"""ganseg: GAN-based image segmentation (U-Net segmenter + conditional PatchGAN discriminator; a mask -> image generator)."""

__version__ = "0.1.0"
