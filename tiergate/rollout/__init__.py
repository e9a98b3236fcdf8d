"""tiergate.rollout"""
