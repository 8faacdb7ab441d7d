"""Tools around the runtime, numpy only: the benchmark (its PyTorch column imports torch when asked), batch
runs over folders and the Dask runner."""
