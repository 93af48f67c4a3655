"""The skills the personas use: the curated catalog and its imported store (skills), and imports of
store crawls (crawl)."""
