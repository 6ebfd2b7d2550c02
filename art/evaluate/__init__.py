"""art.evaluate"""
