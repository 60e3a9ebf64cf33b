"""The in-process pipeline: intake → dispatcher → processors, with a status writer.

Each actor owns one bounded inbox, its loops, and the shared lifecycle of
`taskflow.lifecycle` (start; stop taking work; finish or hand back within a deadline);
the `Pipeline` starts them as supervised named tasks and stops everything if one dies.
"""
