"""Offline training: SFT, RAD-DPO and preference baselines, evaluation (issue 3)."""
