"""Stage 3, the zoo: candidate models with their source embeddings, specs and builds, the
nearest-model index, MODEL2VEC and its transfer records, the evidence check, transferability
scores, and ``recommend``."""
