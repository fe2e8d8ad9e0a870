"""The bus workers: Django processes that answer the gateway's requests."""
