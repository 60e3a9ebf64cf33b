"""The scenarios of `taskflow-bench`, one module each, all `async def run(ctx) -> result`."""
