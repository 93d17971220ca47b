"""Data sets the course generates or ships, one home each, so chapters share them by import.

Nothing here answers an exercise: these modules make and load data, the chapters model it.
"""
