"""VP-SDE (DDPM / DDPM++) experiment configs of score_sde."""
