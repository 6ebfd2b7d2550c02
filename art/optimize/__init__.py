"""art.optimize: fluence-map optimisation against the clinical goals (objectives, voxel sampling, solvers, normalisation).

The clinical protocol itself (goals, metrics, parsing) is :mod:`art.protocol`. Importing
this package stays light: the solvers (scipy, cvxpy) load in the modules that use them.
"""
