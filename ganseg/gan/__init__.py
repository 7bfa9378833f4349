"""What both GANs share: the networks (U-Net, PatchGAN), the generator's moving average and the
training job that the pipeline's one worker loop and one stage driver run."""
