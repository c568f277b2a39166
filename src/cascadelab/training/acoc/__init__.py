"""ACOC's growth policy: when and what to grow (saturation, the variant vote), the penalty, continual learning.

The function-preserving structural operations it decides on live with the model in `models/acoc/growth.py`.
"""
