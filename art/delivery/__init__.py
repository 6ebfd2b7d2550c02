"""art.delivery"""
