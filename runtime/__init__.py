"""skyform.runtime"""
