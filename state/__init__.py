"""skyform.state"""
