"""Live events: every committed status change, pushed to Server-Sent Events streams.

`bus` reads the history table once per notification for every subscriber of the process
and fans the events out in memory; `streams` writes them to the clients (a task's stream,
and the global one with its resumable cursor); `routes` registers both with the app.
"""
