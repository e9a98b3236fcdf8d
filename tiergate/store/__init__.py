"""tiergate.store"""
