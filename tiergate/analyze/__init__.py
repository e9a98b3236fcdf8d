"""tiergate.analyze"""
