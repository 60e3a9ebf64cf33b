"""PostgreSQL out: the schema, the named queries and the one store class that runs them."""
