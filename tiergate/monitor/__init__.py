"""tiergate.monitor"""
