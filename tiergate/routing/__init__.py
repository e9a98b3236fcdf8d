"""tiergate.routing"""
