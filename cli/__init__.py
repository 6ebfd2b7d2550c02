"""The ``art`` command-line front end (thin: all logic lives in :mod:`art`)."""
