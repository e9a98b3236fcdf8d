"""tiergate.evaluate"""
