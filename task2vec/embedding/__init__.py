"""Stage 1, embedding: a task's Task2Vec vector (the probe's refitted head, the per-sample Fisher
engine, the embedding file) and d_sym, with which an embedding measures its own noise."""
