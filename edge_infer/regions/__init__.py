"""Camera regions: where their crops are cut and their state machines."""
