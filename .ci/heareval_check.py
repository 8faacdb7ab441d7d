"""heareval's Embedding (HEAR 2021 evaluation kit) loads hear_edge.hear_api and computes both embeddings."""

import sys

import numpy as np
from heareval.embeddings.task_embeddings import Embedding

embedding = Embedding("hear_edge.hear_api", model_path=sys.argv[1])
audio = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 16000)).astype(np.float32)
scene = embedding.get_scene_embedding_as_numpy(audio)
frames, timestamps = embedding.get_timestamp_embedding_as_numpy(audio)
if scene.shape != (2, embedding.model.scene_embedding_size) or frames.shape[:2] != timestamps.shape \
        or frames.shape[2] != embedding.model.timestamp_embedding_size:
    sys.exit(f"heareval Embedding: unexpected shapes scene {scene.shape}, frames {frames.shape}, "
             f"timestamps {timestamps.shape}")
print(f"heareval Embedding: scene {scene.shape}, frames {frames.shape}, timestamps {timestamps.shape}")
