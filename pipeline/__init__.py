"""clipvip pipeline package."""
