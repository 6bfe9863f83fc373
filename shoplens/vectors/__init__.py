"""What the index and tuning both read and write, below both: the embedding cache of backbone vectors
(embedcache) and the tuning artefact that projects them (tuning). Imports nothing of index/, tune/ or quality/."""
