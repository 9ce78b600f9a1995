"""skiff"""
