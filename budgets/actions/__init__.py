"""The only code that changes budgets, prices, counters, reservations, the usage ledger and alerts: one
topic per module (Zulip's zerver/actions/<topic>.py). Callers import the topic module; nothing is
re-exported here."""
