"""Evaluation: predictions against truths (Tables 3-5, agreement), statistics, figures and per-patient reports.

Imports ``bundle.method`` and ``bundle.data``; never ``bundle.engine``.
"""
