"""VE-SDE (SMLD / NCSN++) experiment configs of score_sde."""
