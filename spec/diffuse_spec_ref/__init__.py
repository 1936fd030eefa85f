"""Python/JAX restatement of the diffuse_nnx interfaces and samplers, and the writer of golden format v1."""
