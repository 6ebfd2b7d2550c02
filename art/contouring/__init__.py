"""art.contouring"""
