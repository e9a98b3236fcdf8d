"""tiergate.data"""
