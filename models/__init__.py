"""Networks, entropy coding and export of the learned codec and denoiser."""
