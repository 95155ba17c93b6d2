"""Training and evaluation data: the pipeline's shards as CLIP-ViP batches (`shards`), downstream
retrieval sets (`retrieval`), and the frame decoding and preprocessing both use (`frames`)."""
