"""The Ray side of the pipeline: starting Ray, sizing and making trainers, the one worker loop every
training runs, the Tune search space and Ray Data for prepare."""
