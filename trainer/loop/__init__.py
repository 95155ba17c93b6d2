"""The parts of the training loop: losses, optimizer and schedule, checkpoints, distributed helpers,
mixed precision and logging. `trainer.train` drives them."""
