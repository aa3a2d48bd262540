"""score_sde's configs of the original DDPM architecture."""
