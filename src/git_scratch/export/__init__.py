"""A GIT model outside PyTorch: ONNX graphs of the image prefix and the text step, and their runtime.

    graphs.py    the two graphs as modules over the model's own blocks; what cannot be exported
    onnx.py      export_onnx: the graphs, export.json, tokenizer and processor files, atomically
    runtime.py   the export opened with ONNX Runtime and checked; numpy only, no torch, no git_scratch
    decode.py    generation's loops over the sessions (load_onnx, ONNX_RUNTIME)

Needs the export extra: pip install 'git-scratch[export]' (onnx, onnxruntime, onnxscript).
"""
