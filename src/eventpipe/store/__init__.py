"""ClickHouse: connection, schema migrations, batch writer and read queries. All SQL lives here."""
