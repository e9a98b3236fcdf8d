"""tiergate.gateway"""
