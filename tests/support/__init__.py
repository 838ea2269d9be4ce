"""Helpers shared by tests of several layers."""
