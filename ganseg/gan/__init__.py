"""What both GANs share, below both model packages: the networks (U-Net, PatchGAN), the moving
average of the trained network and the exported model folder. (Their training jobs, above both,
are in ganseg/jobs/.)"""
