"""Training: the Lightning module that drives a task, run directories, loggers, tuning."""
