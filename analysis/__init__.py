"""clipvip analysis package."""
