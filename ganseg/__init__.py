"""ganseg: GAN-based image segmentation (U-Net generator + conditional PatchGAN discriminator)."""

__version__ = "0.1.0"
