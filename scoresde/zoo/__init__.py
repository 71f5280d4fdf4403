"""Other projects' models and checkpoints, loaded safely and proven equal to their own code.

- `from_score_sde_pytorch`: score_sde_pytorch's (Song et al. 2021) checkpoints and published configs.
"""
