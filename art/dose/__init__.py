"""art.dose"""
