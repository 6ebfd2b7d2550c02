"""art.optimize"""
