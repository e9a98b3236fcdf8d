"""tiergate.costs"""
