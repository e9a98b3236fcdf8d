"""tiergate.train"""
