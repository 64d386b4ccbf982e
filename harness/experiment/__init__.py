"""The experiment file: YAML -> the one typed ExperimentConfig (and its search section), and its errors."""
