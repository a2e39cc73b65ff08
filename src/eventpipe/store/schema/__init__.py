"""The schema's DDL, one module per family of tables, with the migrations that made them (run by store.migration)."""
