"""Tooling users run to try and measure parcours: demo, bench, simulator, local stack."""
