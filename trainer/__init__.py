"""clipvip trainer package."""
