"""One evaluation run: a handler, records and an output folder (ppl, workers, resume, scoring)."""
