"""What a run is: configs and entry points, builders from config, the run directory, resume."""
