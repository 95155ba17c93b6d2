"""clipvip captioner package."""
