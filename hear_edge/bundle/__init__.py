"""What a bundle is, numpy only: its schema, its manifest (read and checked once), the parity gates export
passes and the self-test each load runs."""
