"""`taskflow-bench`: drives a taskflow service and reports rates against baselines.

The service is started by the bench itself (or targeted with `--url`); each scenario runs
`--repetitions` times and the table shows the median of the repetitions.
"""
