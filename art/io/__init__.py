"""art.io"""
