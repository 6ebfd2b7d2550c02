"""art.registration"""
