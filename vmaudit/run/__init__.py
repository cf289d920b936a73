"""Who runs an audit, never what it does: worker processes, batches, the Dask fleet, watch."""
