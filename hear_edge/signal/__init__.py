"""Stages 1-2, numpy only: audio in (files, arrays, the microphone), the log-mel frontend, and the plan of
30 s segments, 6 s windows and stream hops that the graphs run on."""
