"""The service layer: binds the engine (nas_core) to the database (storage) and to processes.

Jobs (queue and run an experiment), the worker that claims them, the CLI, and queueing a retrain of a trial.
The engine knows nothing of this package; pages call it, and it calls the engine and storage.
"""
