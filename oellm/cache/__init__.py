"""Pre-caching on the login node (`precache`), the cache's layout and markers (`paths`), and the
networked / offline helper process (`fetch`)."""
