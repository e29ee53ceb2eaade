"""Schema migrations, one ordered list of DDL scripts per SQL dialect.

The position of a script in its dialect's ``MIGRATIONS`` tuple is the schema
version it produces (the first script makes version 1). Scripts are only ever
appended: a released script is never edited, because databases in the field
already ran it.
"""
