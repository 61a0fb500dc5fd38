"""Static web assets: the player kit (player libraries come from npm at set-up)."""
