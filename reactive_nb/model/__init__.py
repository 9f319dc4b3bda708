"""The model of the database: relations, tenants, schema facts and what SQL reads and writes."""
