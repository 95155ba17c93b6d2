"""Training and evaluation data: the pipeline's shards as CLIP-ViP batches (`shards`; one sample's decode
and the decode cache in `samples`), downstream retrieval sets (`retrieval`), and the frame decoding and
preprocessing both use (`frames`)."""
