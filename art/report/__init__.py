"""art.report"""
