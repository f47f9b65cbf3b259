"""What turns files and text into the model's inputs.

    processor.py  images -> pixel_values (CLIP preprocessing), safe image loading
    tokenizer.py  text <-> ids (BERT WordPiece or a word-level vocabulary)
    video.py      video files -> sampled frames -> pixel_values
    manifest.py   JSONL manifests of captions and questions, as a Dataset
"""
