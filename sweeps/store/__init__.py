"""What a sweep leaves behind and reads back: its folder, lock and outbox, the tracking store
(MLflow runs, the ledger, the parent summary, export files) and where they are."""
