"""The in-process pipeline: intake → dispatcher → processors, with a status writer.

Each actor owns one bounded `asyncio.Queue`, one run loop and a way to stop; the
`Pipeline` starts them as named tasks and stops everything if one dies.
"""
