"""The store's migrations, oldest first. Alembic loads them by path; the package makes them ship."""
