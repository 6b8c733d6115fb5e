"""Reading runs back: history, schema checks, the report, diffs, gates, evaluations attached to images."""
