"""Training stage: the pipeline (data, model and Trainer composed once), Trainer setup, the run dir's life (locks, resume, signals), distributed runs, and re-running committed records."""
