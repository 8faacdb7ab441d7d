"""Stages 3-5, numpy only: the graphs through a backend (windows, overlap-add, task head), results, and the
two ways users run them: `HearEdge` (offline) and `ClassificationStream`."""
