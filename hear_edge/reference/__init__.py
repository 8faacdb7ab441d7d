"""The PyTorch reference (needs torch, except `config` and `macs`): the HEAR model by its official key names,
checkpoint reading, the golden outputs and the MAC count."""
