"""Arranging a piece from sections: a plan of sections (plan.py), each written by an engine, joined without
seams and checked against what it asked for."""
